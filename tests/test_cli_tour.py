"""`prodcat demo`, then the tour it prints under "next", run verbatim from the same folder.

The commands are the README's five-minute tour (the ```bash block between `<!-- tour -->` and
`<!-- /tour -->`, checked line by line here); each runs as printed (the two servers in their own
process, on a free port instead of 8000 / 8001, the README's `curl` as the same HTTP request) and
must print something useful.
"""

from __future__ import annotations

import csv
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from desk_support import free_port, wait_for
from prodcat.cli import app
from prodcat.cli.demo import DEFAULT_OUT, tour

runner = CliRunner()
README = Path(__file__).resolve().parent.parent / "README.md"

TOUR = [
    "prodcat check prodcat-demo/sample/products.csv",
    "prodcat train prodcat-demo/sample/products.csv --out prodcat-demo/model",
    "prodcat predict prodcat-demo/model prodcat-demo/sample/products.csv "
    "--out prodcat-demo/labels.csv",
    "prodcat serve prodcat-demo/model --port 8000",
    "prodcat queue prodcat-demo/model prodcat-demo/sample/products.csv "
    "--db sqlite:///prodcat-demo/desk.db",
    "prodcat review add-user alice --password alice-secret --db sqlite:///prodcat-demo/desk.db",
    "prodcat review --db sqlite:///prodcat-demo/desk.db --port 8001",
]


def test_the_tour_names_real_paths_under_the_out_folder() -> None:
    assert [step.command for step in tour(DEFAULT_OUT)] == TOUR
    elsewhere = [step.command for step in tour(Path("/tmp/my demo"))]
    assert elsewhere[0] == "prodcat check '/tmp/my demo/sample/products.csv'"
    assert elsewhere[-1] == "prodcat review --db 'sqlite:////tmp/my demo/desk.db' --port 8001"


def readme_tour() -> list[str]:
    """The README's tour: its commands, comments and blank lines left out, continuations joined."""
    found = re.search(
        r"<!-- tour -->\s*```bash\n(.*?)```\s*<!-- /tour -->",
        README.read_text(encoding="utf-8"),
        re.S,
    )
    assert found, "README.md has no ```bash block between <!-- tour --> and <!-- /tour -->"
    text = found.group(1).replace("\\\n", " ")
    lines = [" ".join(line.split()) for line in text.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def test_the_readme_tour_is_the_tour_this_test_runs() -> None:
    lines = readme_tour()
    commands = [line.removesuffix("&").strip() for line in lines if not line.startswith("curl ")]
    assert commands == TOUR
    (curl,) = [line for line in lines if line.startswith("curl ")]
    assert curl.endswith('-F title="Men Blue Running Shoes" http://127.0.0.1:8000/v1/predict')
    assert lines.index(curl) == lines.index(TOUR[3] + " &") + 1  # right after the API starts


def invoke(command: str) -> str:
    """Run a command as typed; what it printed on stdout."""
    args = shlex.split(command)
    assert args[0] == "prodcat"
    result = runner.invoke(app, args[1:])
    assert result.exit_code == 0, f"{command}\n{result.output}"
    return result.stdout


def serve_once(command: str, path: str, title: str | None = None) -> tuple[str, dict | None]:
    """Start a server command in its own process (on a free port), GET `path`, stop it; with a
    `title`, also POST it to /v1/predict as the README's curl does and return the answer."""
    args = shlex.split(command)[1:]
    port = free_port()
    args[args.index("--port") + 1] = str(port)
    proc = subprocess.Popen(
        [sys.executable, "-m", "prodcat.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(f"http://127.0.0.1:{port}{path}", proc, seconds=120)
        answer = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=10)
        assert answer.status_code == 200, answer.text
        predicted = None
        if title is not None:
            posted = httpx.post(
                f"http://127.0.0.1:{port}/v1/predict", files={"title": (None, title)}, timeout=30
            )
            assert posted.status_code == 200, posted.text
            predicted = posted.json()
    finally:
        proc.terminate()
        printed, _ = proc.communicate(timeout=30)
    return printed, predicted


def demo_acceptance(printed: str) -> tuple[int, str]:
    """The photo + title model's line under "automatic labelling": products accepted, accuracy."""
    found = re.search(
        r"photo \+ title \(fusion network x title words\)\s+accepted ([\d,]+) of [\d,]+ "
        r"in-class products \([\d.]+%\) at measured accuracy ([\d.]+%)",
        " ".join(printed.split()),
    )
    assert found, printed
    return int(found.group(1).replace(",", "")), found.group(2)


@pytest.mark.slow
def test_the_demo_then_its_tour_verbatim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    printed = invoke("prodcat demo")
    assert "photo + title (fusion network x title words) accuracy" in printed
    suggested = [line for line in printed.splitlines() if line.startswith("prodcat ")]
    assert suggested == TOUR
    for kind in ("text", "image", "fusion"):
        assert (tmp_path / "prodcat-demo" / kind / "model.json").is_file()
    assert (tmp_path / "prodcat-demo" / "report" / "index.html").is_file()
    assert "accept target: 95% accuracy, not the default 99.5%" in printed
    accepted, accuracy = demo_acceptance(printed)
    assert accepted > 0
    # The accuracy it prints is the measured one: evaluate the saved model on the same part.
    figures = tmp_path / "fusion.json"
    invoke(
        "prodcat evaluate prodcat-demo/fusion prodcat-demo/sample/products.csv --part test "
        f"--json {figures}"
    )
    measured = json.loads(figures.read_text())
    assert measured["decisions"]["accept"] == accepted
    assert f"{measured['accepted_accuracy']:.2%}" == accuracy
    assert measured["accepted_accuracy"] >= 0.9
    check, train, predict, serve, queue, add_user, review = TOUR

    assert "Catalogue check" in invoke(check)
    plan = json.loads(invoke(f"{check} --json"))["training"]

    printed = invoke(train)
    # Every class of the sample is accounted for: learned, or named as left out.
    assert "classes: 20 learned of 29; 9 left out, each with fewer than 5 training products" in (
        printed
    )
    for name, count in plan["left_out"].items():
        assert f"{name} ({count})" in printed
    assert (tmp_path / "prodcat-demo" / "model" / "model.json").is_file()

    printed = invoke(predict)
    assert "1,501 products labelled, 0 rows rejected" in printed
    assert "correct (the file has labels)" in printed
    with (tmp_path / "prodcat-demo" / "labels.csv").open(encoding="utf-8") as handle:
        labels = list(csv.DictReader(handle))
    assert len(labels) == 1501 and {"true_category", "correct"} <= set(labels[0])

    printed, answer = serve_once(serve, "/healthz", title="Men Blue Running Shoes")
    assert "/v1/predict" in printed
    assert answer is not None and answer["category"] == "Footwear > Shoes > Sports Shoes"
    assert answer["modalities"] == ["text"] and answer["decision"] in (
        "accept",
        "review",
        "unknown",
    )

    assert "1,501 new" in invoke(queue)
    assert "user 'alice' (reviewer) saved" in invoke(add_user)
    printed, _ = serve_once(review, "/login")
    assert "review desk: http://127.0.0.1:" in printed
