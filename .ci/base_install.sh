#!/usr/bin/env bash
# CI, after the main tests: `pip install prodcat` alone (the base: no torch, no weight packages) in a
# fresh venv predicts, serves and runs the desk from a model folder trained in the full install.
# Run from .ci/run once .venv (the README's test command) exists; nothing is trained in the base.
set -euo pipefail
cd "$(dirname "$0")/.."
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export PRODCAT_CACHE_DIR="$work/cache"  # nothing from an earlier export cache helps either side

# The sample model, trained as tests/conftest.py's sample_model_dir trains it, in the full venv
# (FULL_PYTHON: another full install's python, to run this script alone).
"${FULL_PYTHON:-.venv/bin/python}" - "$work/model" <<'PY'
import sys
from prodcat.catalogue import load_catalogue
from prodcat.cli.demo import sample_catalogue
from prodcat.features.cache import FeatureCache
from prodcat.paths import default_cache_dir
from prodcat.training.train import TrainOptions, train

result = train(
    load_catalogue(sample_catalogue()),
    TrainOptions(model="fusion-blend", seed=0),
    cache=FeatureCache(default_cache_dir()),
    progress=False,
)
result.model.save(sys.argv[1])
PY
rm -rf "$PRODCAT_CACHE_DIR"  # the model folder must carry its encoders itself

# The base alone (not editable: the installed package, package data included), then the test
# tools on top; its size is printed before the test tools arrive.
python3 -m venv "$work/base"
"$work/base/bin/pip" install -q -c constraints.txt .
echo "base install: $(du -sm "$work/base" | cut -f1) MB on disk"
if "$work/base/bin/python" -c "import torch" 2>/dev/null; then
  echo "torch is importable in the base install: something in the base pulls it in" >&2
  exit 1
fi
"$work/base/bin/pip" install -q -c constraints.txt pytest httpx hypothesis schemathesis

# The predict / serve / desk tests (marked `base`); `import prodcat` is the installed package (the
# checkout's is under src/, not on the path); other test modules are not collected where torch is
# missing (tests/conftest.py).
PRODCAT_TEST_MODEL_DIR="$work/model" COLUMNS=40 "$work/base/bin/python" -m pytest tests -m base \
  -q -p no:cacheprovider
