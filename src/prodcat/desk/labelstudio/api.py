"""`prodcat review sync-labelstudio`: push the open queue to a Label Studio project and pull its
answers back over Label Studio's REST API (a legacy or personal access token), so nobody moves
files by hand.

Push: the project's tasks are listed first and matched by `data.product_id`, so a product Label
Studio has already is never imported twice; one re-scored since its export is updated in place
(PATCH of its data). Pull: the project's JSON export plus its user list (annotators' emails),
through the same import as a file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from prodcat.desk.db import Database, LabelStudioTask, QueueItem
from prodcat.desk.labelstudio.images import Images, storage_folders
from prodcat.desk.labelstudio.importer import ImportResult, import_labelstudio
from prodcat.desk.labelstudio.reading import user_name
from prodcat.desk.labelstudio.tasks import fingerprint, mark_exported, queue_items, task_of

PAGE = 100


class LabelStudioError(RuntimeError):
    """Label Studio refused a request or could not be reached; the message says which."""


class LabelStudio:
    """A thin client: the few endpoints prodcat needs, errors turned into LabelStudioError."""

    def __init__(self, url: str, token: str, timeout: float = 60) -> None:
        import requests

        self.url, self.timeout = url.rstrip("/"), timeout
        self.http = requests.Session()
        scheme = "Bearer" if token.count(".") == 2 else "Token"  # a personal access token is a JWT
        self.http.headers["Authorization"] = (
            f"{scheme} {self._access(token) if scheme == 'Bearer' else token}"
        )

    def _access(self, refresh: str) -> str:
        """A personal access token is a refresh token: trade it for an access token."""
        answer = self._call("POST", "/api/token/refresh", json={"refresh": refresh}, auth=False)
        return str(answer["access"])

    def _call(self, method: str, path: str, *, auth: bool = True, **kwargs: Any) -> Any:
        import requests

        try:
            send = self.http.request if auth else requests.request
            reply = send(method, self.url + path, timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise LabelStudioError(f"Label Studio at {self.url} cannot be reached: {exc}") from None
        if reply.status_code >= 400:
            raise LabelStudioError(
                f"Label Studio answered {reply.status_code} to {method} {path}: {reply.text[:300]}"
            )
        return reply.json() if reply.content else None

    def get(self, path: str, **params: Any) -> Any:
        return self._call("GET", path, params=params)

    def post(self, path: str, body: Any, **params: Any) -> Any:
        return self._call("POST", path, json=body, params=params)

    def patch(self, path: str, body: Any) -> Any:
        return self._call("PATCH", path, json=body)

    def create_project(self, title: str, config: str, overlap: int) -> int:
        body = {"title": title, "label_config": config, "maximum_annotations": overlap}
        return int(self.post("/api/projects", body)["id"])

    def task_ids(self, project: int) -> dict[str, int]:
        """product id -> Label Studio task id, for every task of the project."""
        found: dict[str, int] = {}
        page = 1
        while True:
            answer = self.get("/api/tasks", project=project, page=page, page_size=PAGE)
            tasks = answer.get("tasks", []) if isinstance(answer, dict) else answer
            for task in tasks:
                pid = (task.get("data") or {}).get("product_id")
                if pid is not None:
                    found[str(pid)] = int(task["id"])
            total = answer.get("total", 0) if isinstance(answer, dict) else 0
            if len(tasks) < PAGE or page * PAGE >= total:  # past the last page is a 404
                return found
            page += 1

    def import_tasks(self, project: int, tasks: list[dict[str, Any]]) -> list[int]:
        answer = self.post(f"/api/projects/{project}/import", tasks, return_task_ids="true")
        return [int(i) for i in answer.get("task_ids") or []]

    def export(self, project: int, kind: str = "JSON") -> list[Any]:
        answer = self.get(f"/api/projects/{project}/export", exportType=kind)
        return answer if isinstance(answer, list) else []

    def users(self) -> dict[int, str]:
        answer = self.get("/api/users")
        rows = answer.get("results", []) if isinstance(answer, dict) else answer
        return {int(r["id"]): user_name(r) for r in rows if isinstance(r, dict) and "id" in r}

    def add_local_storage(self, project: int, folder: str) -> None:
        """A Local Files source storage on `folder` (never synced: prodcat makes the tasks), which
        Label Studio needs before it serves /data/local-files/ under it."""
        have = self.get("/api/storages/localfiles", project=project) or []
        if any(str(s.get("path")) == folder for s in have):
            return
        body = {
            "project": project,
            "path": folder,
            "title": "prodcat photos",
            "use_blob_urls": True,
        }
        self.post("/api/storages/localfiles", body)


@dataclass
class SyncResult:
    pushed: int = 0
    updated: int = 0  # tasks re-scored since their export, updated in place
    already: int = 0  # open products the project had, unchanged
    photo_problems: list[str] = field(default_factory=list)
    setup: list[str] = field(default_factory=list)
    imported: ImportResult = field(default_factory=ImportResult)


def sync(
    db: Database,
    ls: LabelStudio,
    project: int,
    images: Images,
    *,
    kind: str = "taxonomy",
    preselect: bool = False,
    everything: bool = False,
) -> SyncResult:
    """Push the open queue (`everything`: every queued product) to `project`, then pull its
    answers into the desk."""
    result = SyncResult()
    have = ls.task_ids(project)
    new: list[dict[str, Any]] = []
    dirs: list[str] = []
    with db.session() as s, s.begin():
        for item in queue_items(s, open_only=not everything):
            if item.product_id in have:
                result.updated += _refresh(
                    s, ls, project, item, have[item.product_id], images, kind
                )
                continue
            new.append(task_of(item, images, kind, preselect, result.photo_problems))
            dirs += [str(Path(item.image_path).parent)] if item.image_path else []
    result.already = len(have) - result.updated
    if images.mode == "local-files" and images.root is not None:
        for folder in storage_folders(dirs, images.root.resolve()):
            ls.add_local_storage(project, folder)
    result.setup = images.setup_lines(dirs)
    if new:
        ids = ls.import_tasks(project, new)
        _record(db, new, ids, project)
        result.pushed = len(new)
    result.imported = import_labelstudio(db, ls.export(project, "JSON"), ls.users())
    return result


def _refresh(
    s: Session,
    ls: LabelStudio,
    project: int,
    item: QueueItem,
    task_id: int,
    images: Images,
    kind: str,
) -> int:
    """Update a task Label Studio has when the product was re-scored since; 1 when it was."""
    mark = fingerprint(item)
    row = s.get(LabelStudioTask, item.product_id)
    changed = row is not None and row.fingerprint != mark
    if changed:
        data = task_of(item, images, kind, False, [])["data"]
        ls.patch(f"/api/tasks/{task_id}", {"data": data})
    mark_exported(s, item.product_id, mark, project=project, task_id=task_id)
    return int(changed)


def _record(db: Database, tasks: list[dict[str, Any]], ids: list[int], project: int) -> None:
    with db.session() as s, s.begin():
        for n, task in enumerate(tasks):
            item = s.get(QueueItem, task["data"]["product_id"])
            if item is not None:
                task_id = ids[n] if n < len(ids) else None
                mark_exported(
                    s, item.product_id, fingerprint(item), project=project, task_id=task_id
                )
