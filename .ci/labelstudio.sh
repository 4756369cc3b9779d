#!/usr/bin/env bash
# A pinned Label Studio in its own virtual environment (its pins clash with prodcat's), for
# tests/test_labelstudio_server.py. Prints the label-studio binary's path on stdout, everything
# else on stderr: .ci/run sets PRODCAT_LABEL_STUDIO_BIN from it. Outside the repository, so lint
# and git never see it; PRODCAT_LABEL_STUDIO_VENV moves it.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${PRODCAT_LABEL_STUDIO_VENV:-${TMPDIR:-/tmp}/prodcat-labelstudio-venv}"
rm -rf "$venv"
python3 -m venv "$venv" >&2
"$venv/bin/pip" install -q -c .ci/labelstudio-constraints.txt label-studio >&2
# Its version, without a pipe that could break under pipefail, and not by `label-studio
# --version`, which sets up ~/.local.
"$venv/bin/python" -c 'import importlib.metadata as m; print("label-studio", m.version("label-studio"))' >&2
echo "$venv/bin/label-studio"
