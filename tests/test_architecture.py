"""The package's shape: the layers follow the data flow, no import cycles, no sprawling files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import prodcat

PACKAGE = Path(prodcat.__file__).parent
ROOT = PACKAGE.parent.parent
MAX_LINES = 500
# A longer file says why in its opening docstring with this phrase.
LONG_ON_PURPOSE = "long on purpose"


def test_import_contracts_are_kept() -> None:
    """import-linter's contracts in pyproject.toml: layers point down, no cycles."""
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint_imports), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(PACKAGE.parent)},
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_no_source_file_sprawls() -> None:
    too_long = {}
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        n = text.count("\n")
        if n > MAX_LINES and LONG_ON_PURPOSE not in text[:2000]:
            too_long[str(path.relative_to(PACKAGE))] = n
    assert not too_long, f"over {MAX_LINES} lines without saying why: {too_long}"


def test_every_stage_is_a_package() -> None:
    """The data flow reads from the folder names."""
    stages = [
        "catalogue",
        "taxonomy",
        "encoders",
        "features",
        "heads",
        "gate",
        "monitor",
        "model",
        "training",
        "report",
        "serving",
        "desk",
        "cli",
    ]
    for stage in stages:
        assert (PACKAGE / stage / "__init__.py").is_file(), stage
    loose = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert loose == ["__init__.py", "paths.py", "progress.py"], loose
