"""The README's five-minute tour, run exactly as written, from the folder where `prodcat demo` ran.

The tour is the ```bash block between `<!-- tour -->` and `<!-- /tour -->` in README.md. Each line
runs through the shell as written; a line ending in `&`, or a server command (`prodcat serve`,
`prodcat review` with no sub-command), is started in the background and must answer on its port
before the next line runs. Every other line must exit 0.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import prodcat

ROOT = Path(prodcat.__file__).parent.parent.parent
README = ROOT / "README.md"
STARTUP_S = 90.0  # a server's first answer: loading the model and opening its ONNX sessions


def tour_lines(readme: str) -> list[str]:
    """The tour's commands: the bash block between the markers, comments and blanks left out."""
    found = re.search(r"<!-- tour -->\s*```bash\n(.*?)```\s*<!-- /tour -->", readme, re.S)
    assert found, "README.md has no ```bash block between <!-- tour --> and <!-- /tour -->"
    lines = [line.split(" #")[0].strip() for line in found.group(1).splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def is_server(line: str) -> bool:
    words = shlex.split(line.rstrip("&"))
    if line.endswith("&"):
        return True
    if words[:2] == ["prodcat", "serve"]:
        return True
    return words[:2] == ["prodcat", "review"] and (len(words) == 2 or words[2].startswith("--"))


def port_of(line: str) -> int:
    words = shlex.split(line.rstrip("&"))
    return int(words[words.index("--port") + 1]) if "--port" in words else 8000


def wait_for(url: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited with {process.returncode} before answering")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    raise AssertionError(f"no answer from {url} within {STARTUP_S:.0f} s")


def test_the_tour_block_is_what_the_test_runs() -> None:
    lines = tour_lines(README.read_text(encoding="utf-8"))
    commands = [shlex.split(line.rstrip("&"))[:2] for line in lines]
    for step in ("check", "train", "predict", "serve", "queue", "review"):
        assert ["prodcat", step] in commands, f"the tour has no `prodcat {step}`"


@pytest.mark.slow
def test_the_readme_tour_runs_as_written(tmp_path: Path) -> None:
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    demo = subprocess.run(
        ["prodcat", "demo"], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
    )
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    servers: list[subprocess.Popen[str]] = []
    outputs: dict[str, str] = {}
    try:
        for line in tour_lines(README.read_text(encoding="utf-8")):
            if is_server(line):
                process = subprocess.Popen(
                    line.rstrip("&").strip(),
                    shell=True,
                    cwd=tmp_path,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    text=True,
                    start_new_session=True,
                )
                servers.append(process)
                words = shlex.split(line.rstrip("&"))
                path = "/healthz" if words[1] == "serve" else "/login"
                wait_for(f"http://127.0.0.1:{port_of(line)}{path}", process)
                continue
            done = subprocess.run(
                line, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, check=False
            )
            assert done.returncode == 0, f"{line}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            outputs[line] = done.stdout
    finally:
        for process in servers:
            os.killpg(process.pid, 15)
            process.wait(timeout=30)
    # What the tour promises: a model, a labels file, an answer from the API, a desk database.
    assert (tmp_path / "prodcat-demo" / "model" / "model.json").is_file()
    labels = (tmp_path / "prodcat-demo" / "labels.csv").read_text(encoding="utf-8").splitlines()
    assert len(labels) == 1 + 1501  # a header and one row per sample product
    assert "predicted_category" in labels[0].split(",")
    (curl,) = [out for line, out in outputs.items() if line.startswith("curl")]
    answer = json.loads(curl)
    assert answer["category"].count(" > ") == 2 and 0.0 <= answer["probability"] <= 1.0
    assert (tmp_path / "prodcat-demo" / "desk.db").is_file()
