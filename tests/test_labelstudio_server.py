"""The round trip against a real Label Studio server (started here, on 127.0.0.1, its data under
the test's temp folder): a project from prodcat's interface, the tasks imported, a photo served
by Label Studio, answers by two annotators (agree, disagree, off-list, skip, edit), the JSON and
JSON_MIN exports read back, the desk's labels CSV checked, and a REST sync.

Label Studio is not a dependency of prodcat: CI installs it in its own virtual environment
(.ci/labelstudio.sh) and names the binary in PRODCAT_LABEL_STUDIO_BIN; without it the module is
skipped, saying so.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import prodcat
from labelstudio_support import LabelStudioServer, queued_desk
from prodcat.catalogue import Catalogue
from prodcat.catalogue.extra_labels import read_labels_csv
from prodcat.cli import app
from prodcat.desk.db import Database
from prodcat.desk.labelstudio.api import LabelStudio

BINARY = os.environ.get("PRODCAT_LABEL_STUDIO_BIN", "")
pytestmark = pytest.mark.skipif(
    not BINARY or not Path(BINARY).exists(),
    reason="no Label Studio: set PRODCAT_LABEL_STUDIO_BIN to a label-studio binary "
    "(.ci/labelstudio.sh installs one in its own venv)",
)
N = 8
ROOT = Path(prodcat.__file__).parent / "data"  # Label Studio's document root: sample/images/...


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelStudioServer]:
    running = LabelStudioServer(BINARY, tmp_path_factory.mktemp("label-studio"), ROOT).start()
    try:
        yield running
    finally:
        running.stop()


def invoke(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def _tax(path: str) -> list[dict[str, Any]]:
    value = {"taxonomy": [path.split(" > ")]}
    return [{"from_name": "category", "to_name": "image", "type": "taxonomy", "value": value}]


def test_round_trip_through_label_studio(
    server: LabelStudioServer, tmp_path: Path, sample_catalogue: Catalogue
) -> None:
    url = f"sqlite:///{tmp_path / 'desk.db'}"
    db = queued_desk(url, sample_catalogue, N)
    ls = LabelStudio(server.url, server.token)

    # the file route: tasks and interface from prodcat, the project made as a person would
    tasks_file, config = tmp_path / "tasks.json", tmp_path / "interface.xml"
    printed = invoke(
        "review", "export-labelstudio", "--out", str(tasks_file), "--config", str(config),
        "--local-files-root", str(ROOT), "--db", url,
    )  # fmt: skip
    assert f"{N} tasks: " in printed and f"absolute local path {ROOT / 'sample'}" in printed
    project = ls.create_project("prodcat review", config.read_text(), overlap=1)
    ls.add_local_storage(project, str(ROOT / "sample"))
    tasks = json.loads(tasks_file.read_text())
    ids = ls.import_tasks(project, tasks)
    assert len(ids) == N
    task = {int(t): ls.get(f"/api/tasks/{t}") for t in ids}
    first = task[ids[0]]["data"]
    assert first["image"].startswith("/data/local-files/?d=sample/images/")
    photo = ls.http.get(server.url + first["image"], timeout=30)
    assert photo.status_code == 200 and photo.headers["content-type"] == "image/jpeg"
    assert photo.content[:2] == b"\xff\xd8"  # a JPEG, served by Label Studio itself

    # two annotators: the admin (the token's user) and bob
    bob = ls.post("/api/users", {"email": "bob@example.org", "username": "bob"})["id"]
    pid = [task[t]["data"]["product_id"] for t in ids]
    sug = [task[t]["data"]["suggestions"] for t in ids]

    def annotate(k: int, result: list[Any], who: int | None = None, **extra: Any) -> int:
        body = {"result": result, "lead_time": 7.5, **extra}
        body |= {"completed_by": who} if who else {}
        return int(ls.post(f"/api/tasks/{ids[k]}/annotations", body)["id"])

    agree = annotate(0, _tax(sug[0][0]))
    annotate(1, _tax(sug[1][2]), bob)  # disagrees with the model
    typed = [{"from_name": "new_category", "to_name": "image", "type": "textarea",
              "value": {"text": ["Home > Decor > Vases"]}}]  # fmt: skip
    annotate(2, typed, bob)  # a category that is not in the list
    annotate(3, [], was_cancelled=True)  # skipped
    annotate(4, _tax(sug[4][0]))
    annotate(4, _tax(sug[4][1]), bob)  # a second annotator: the overlap is 1

    exported, users = tmp_path / "export.json", tmp_path / "users.json"
    exported.write_text(json.dumps(ls.export(project, "JSON")))
    users.write_text(json.dumps(ls.get("/api/users")))
    printed = invoke(
        "review", "import-labelstudio", str(exported), "--users", str(users), "--db", url
    )
    assert "4 answers imported, 0 replaced" in printed and "1 skips recorded" in printed
    assert "1 proposed new categories, 1 left out" in printed
    assert f"Label Studio task {ids[4]} (product {pid[4]}): bob@example.org's answer left out" in (
        printed
    )
    again = invoke(
        "review", "import-labelstudio", str(exported), "--users", str(users), "--db", url
    )
    assert "0 answers imported, 0 replaced by a later edit, 5 already there" in again

    # an edit after the import, read from the JSON_MIN export (no skips in that format)
    ls.patch(f"/api/annotations/{agree}", {"result": _tax(sug[0][3])})
    minimal = tmp_path / "export-min.json"
    minimal.write_text(json.dumps(ls.export(project, "JSON_MIN")))
    printed = invoke(
        "review", "import-labelstudio", str(minimal), "--users", str(users), "--db", url
    )
    assert "0 answers imported, 1 replaced by a later edit" in printed
    assert f"Label Studio task {ids[0]} (product {pid[0]}): admin@example.org changed" in printed

    labels = tmp_path / "labels.csv"
    invoke("review", "export", "--out", str(labels), "--db", url)
    got = {k: " > ".join(v) for k, v in read_labels_csv(labels).labels.items()}
    assert got == {
        pid[0]: sug[0][3],
        pid[1]: sug[1][2],
        pid[2]: "Home > Decor > Vases",
        pid[4]: sug[4][0],
    }
    rows = {r.split(",")[0]: r for r in labels.read_text().splitlines()[1:]}
    assert ",labelstudio:bob@example.org," in rows[pid[2]] and rows[pid[2]].endswith(",true")

    # the REST sync: Label Studio has every open product already, so nothing is pushed twice
    assert "0 tasks: " in invoke(
        "review", "export-labelstudio", "--out", str(tasks_file), "--db", url
    )
    printed = invoke(
        "review", "sync-labelstudio", "--url", server.url, "--token", server.token,
        "--project", str(project), "--db", url,
    )  # fmt: skip
    assert "0 tasks pushed, 0 updated in place" in printed and "0 answers imported" in printed
    assert len(ls.task_ids(project)) == N

    # a new project over REST with photos inlined (nothing to set up in Label Studio)
    printed = invoke(
        "review", "sync-labelstudio", "--url", server.url, "--token", server.token,
        "--title", "inline photos", "--all", "--max-side", "64", "--db", url,
    )  # fmt: skip
    assert f"{N} tasks pushed" in printed and "nothing to set in Label Studio" in printed
    other = int(printed.split("project ", 1)[1].split()[0])
    inline = ls.get(f"/api/tasks/{ls.task_ids(other)[pid[1]]}")["data"]["image"]
    assert inline.startswith("data:image/jpeg;base64,")
    db.dispose()


def test_tokens_personal_and_wrong(server: LabelStudioServer, tmp_path: Path) -> None:
    """A personal access token (a JWT refresh token) works as well as the legacy one; a wrong
    token is refused with Label Studio's own answer, no traceback."""
    legacy = LabelStudio(server.url, server.token)
    personal = legacy.post("/api/token/", {})["token"]
    assert server.email in LabelStudio(server.url, personal).users().values()
    url = f"sqlite:///{tmp_path / 'desk.db'}"
    Database(url).dispose()
    result = CliRunner().invoke(
        app,
        ["review", "sync-labelstudio", "--url", server.url, "--token", "wrong-token",
         "--project", "1", "--db", url],
    )  # fmt: skip
    assert result.exit_code == 2 and "Label Studio answered 401" in result.output
