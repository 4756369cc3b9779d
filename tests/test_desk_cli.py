"""The desk's commands end to end on the sample: queue (twice), add-user, export, Label Studio."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from prodcat.cli import app
from prodcat.desk import review
from prodcat.desk.auth import authenticate
from prodcat.desk.db import Database
from prodcat.model.bundle import model_version

runner = CliRunner()


def invoke(*args: str, env: dict[str, str] | None = None) -> str:
    result = runner.invoke(app, list(args), env=env)
    assert result.exit_code == 0, result.output
    return result.output


def test_queue_review_commands(tmp_path: Path, sample_model_dir: Path, sample_csv: Path) -> None:
    url = f"sqlite:///{tmp_path / 'desk.db'}"
    first = invoke("queue", str(sample_model_dir), str(sample_csv), "--db", url)
    assert "1,501 new" in first and "0 catalogue rows rejected" in first
    # re-running adds nothing: test_desk_queue.py (library level, faster)
    invoke(
        "review",
        "add-user",
        "ana",
        "--role",
        "admin",
        "--db",
        url,
        env={"PRODCAT_DESK_PASSWORD": "a long password"},
    )
    db = Database(url)
    ana = authenticate(db, "ana", "a long password")
    assert ana is not None and ana.role == "admin"
    bad = runner.invoke(
        app,
        ["review", "add-user", "x", "--db", url, "--role", "boss"],
        env={"PRODCAT_DESK_PASSWORD": "a long password"},
    )
    assert bad.exit_code == 2 and "role 'boss'" in bad.output

    task = review.next_task(db, ana)
    assert task is not None
    review.answer(db, ana, task.product_id, task.top[1][0])
    labels = tmp_path / "labels.csv"
    assert "1 answers" in invoke("review", "export", "--out", str(labels), "--db", url)
    row = labels.read_text().splitlines()[1].split(",")
    assert row[0] == task.product_id and row[2] == "ana" and row[5] == "false"

    tasks, config = tmp_path / "tasks.json", tmp_path / "interface.xml"
    out = invoke(
        "review", "export-labelstudio", "--out", str(tasks), "--config", str(config), "--db", url,
        "--interface", "choices", "--preselect", "--image-url", "/image/{id}",
    )  # fmt: skip
    exported = json.loads(tasks.read_text())
    assert f"{len(exported):,} tasks" in out and "<Choices" in config.read_text()
    version = exported[0]["predictions"][0]["model_version"]
    assert version == model_version(sample_model_dir)  # the bundle's, as the API reports it
    exported[0]["annotations"] = [
        {
            "completed_by": 7,
            "result": [
                {"type": "choices", "value": {"choices": [exported[0]["data"]["suggestions"][0]]}}
            ],
        }
    ]
    tasks.write_text(json.dumps(exported))
    assert "1 answers imported" in invoke("review", "import-labelstudio", str(tasks), "--db", url)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    result = runner.invoke(app, ["review", "import-labelstudio", str(broken), "--db", url])
    assert result.exit_code == 2 and "not a Label Studio JSON export" in result.output
