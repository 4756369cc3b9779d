"""Reading Label Studio's exports (JSON, JSON_MIN) into one annotation record each, with the
annotator's name resolved; nothing here touches the desk's database.

JSON: tasks, each with `annotations` (skips have `was_cancelled`); `completed_by` is a user id in
Label Studio 1.23's quick export and {id, email, first_name, last_name} in a snapshot export.
JSON_MIN: one flat record per annotation (task data, `id` the task id, one field per control,
`annotator`, `annotation_id`, `created_at`, `updated_at`, `lead_time`); it leaves skips out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prodcat.desk.labelstudio.interface import (
    FROM_NAME,
    NEW_NAME,
    categories_in,
    categories_in_min,
)

JSON_MIN_KEYS = ("annotation_id", "annotator")


@dataclass
class Annotation:
    """One annotator's answer (or skip) to one task, as Label Studio last saved it."""

    key: str  # Label Studio's annotation id, or task/annotator when the export has none
    task_id: int | None
    product_id: str
    annotator: str
    created_at: datetime
    updated_at: datetime
    lead_time_s: float | None
    skipped: bool
    picked: list[str]  # categories chosen from the list
    typed: list[str]  # categories typed into the new-category box

    @property
    def where(self) -> str:
        task = f"task {self.task_id}" if self.task_id is not None else "a task without an id"
        return f"Label Studio {task} (product {self.product_id})"


def load_export(path: Path) -> list[Any]:
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a Label Studio JSON export ({exc})") from None
    if not isinstance(records, list):
        raise ValueError(
            f"{path}: expected a JSON list of tasks (JSON or JSON_MIN export), "
            f"got {type(records).__name__}"
        )
    return records


def load_users(path: Path) -> dict[int, str]:
    """`--users users.json`: Label Studio's GET /api/users answer (a list, or {'results': [...]})
    -> user id: email (else username, else first and last name)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a Label Studio users JSON ({exc})") from None
    rows = data.get("results") if isinstance(data, dict) else data
    if not isinstance(rows, list):
        raise ValueError(f"{path}: expected a list of users as GET /api/users answers")
    users = {}
    for row in rows:
        if isinstance(row, dict) and isinstance(row.get("id"), int):
            users[row["id"]] = user_name(row)
    return users


def user_name(row: dict[str, Any]) -> str:
    full = " ".join(str(row.get(k) or "").strip() for k in ("first_name", "last_name")).strip()
    return str(row.get("email") or row.get("username") or full or row.get("id"))


def read_export(records: list[Any], users: dict[int, str], problems: list[str]) -> list[Annotation]:
    """Every annotation in a JSON or JSON_MIN export; a record that cannot be read is reported
    (naming its task id and product id where it has them) and the rest go on."""
    users = dict(users)
    for record in records:  # a snapshot export names its annotators: learn them first
        for a in record.get("annotations") or [] if isinstance(record, dict) else []:
            who = a.get("completed_by") if isinstance(a, dict) else None
            if isinstance(who, dict) and isinstance(who.get("id"), int):
                users.setdefault(who["id"], user_name(who))
    out: list[Annotation] = []
    for n, record in enumerate(records, 1):
        if not isinstance(record, dict):
            problems.append(f"record {n} of the export: expected an object, got {record!r:.60}")
        elif isinstance(record.get("data"), dict):
            out += _from_json(record, n, users, problems)
        elif any(k in record for k in JSON_MIN_KEYS) or "product_id" in record:
            out += _from_json_min(record, n, users, problems)
        else:
            problems.append(
                f"record {n} of the export: neither a JSON task (with 'data') nor a JSON_MIN "
                "record (with 'product_id' and 'annotation_id')"
            )
    return out


def _task_label(record: dict[str, Any], n: int) -> str:
    tid = record.get("id")
    return f"Label Studio task {tid}" if tid is not None else f"record {n} of the export"


def _from_json(
    task: dict[str, Any], n: int, users: dict[int, str], problems: list[str]
) -> list[Annotation]:
    pid = task["data"].get("product_id")
    if pid is None or str(pid) == "":
        problems.append(f"{_task_label(task, n)}: data.product_id is missing")
        return []
    out = []
    for a in task.get("annotations") or []:
        if not isinstance(a, dict):
            problems.append(
                f"{_task_label(task, n)} (product {pid}): an annotation is not an object"
            )
            continue
        skipped = bool(a.get("was_cancelled") or a.get("skipped"))
        picked, typed = split_result(a.get("result"))
        out.append(_annotation(task.get("id"), str(pid), a, users, skipped, picked, typed))
    return out


def split_result(result: Any) -> tuple[list[str], list[str]]:
    """(categories picked from the list, categories typed in the new-category box)."""
    regions = result if isinstance(result, list) else []
    typed_regions = [r for r in regions if isinstance(r, dict) and r.get("from_name") == NEW_NAME]
    others = [r for r in regions if isinstance(r, dict) and r.get("from_name") != NEW_NAME]
    return categories_in(others), categories_in(typed_regions)


def _from_json_min(
    record: dict[str, Any], n: int, users: dict[int, str], problems: list[str]
) -> list[Annotation]:
    pid = record.get("product_id")
    if pid is None or str(pid) == "":
        problems.append(f"{_task_label(record, n)}: product_id is missing")
        return []
    if record.get("annotation_id") is None:
        return []  # a task nobody annotated: JSON_MIN lists it with its data only
    annotation = {
        "id": record.get("annotation_id"),
        "completed_by": record.get("annotator"),
        **{k: record.get(k) for k in ("created_at", "updated_at", "lead_time")},
    }
    picked = categories_in_min(record.get(FROM_NAME))
    typed = categories_in_min(record.get(NEW_NAME))
    return [_annotation(record.get("id"), str(pid), annotation, users, False, picked, typed)]


def _annotation(
    task_id: Any,
    pid: str,
    a: dict[str, Any],
    users: dict[int, str],
    skipped: bool,
    picked: list[str],
    typed: list[str],
) -> Annotation:
    annotator = annotator_name(a.get("completed_by"), users)
    created = parse_time(a.get("created_at"))
    updated = parse_time(a.get("updated_at")) if a.get("updated_at") else created
    tid = int(task_id) if isinstance(task_id, int | str) and str(task_id).isdigit() else None
    key = str(a["id"]) if a.get("id") is not None else f"{tid or pid}/{annotator}"
    lead = a.get("lead_time")
    return Annotation(
        key=key,
        task_id=tid,
        product_id=pid,
        annotator=annotator,
        created_at=created,
        updated_at=updated or created,
        lead_time_s=float(lead) if isinstance(lead, int | float) else None,
        skipped=skipped,
        picked=picked,
        typed=typed,
    )


def annotator_name(who: Any, users: dict[int, str]) -> str:
    """An email or name where the export or --users gives one, else the user id as it is."""
    if isinstance(who, dict):
        return user_name(who)
    if isinstance(who, int):
        return users.get(who, str(who))
    if isinstance(who, str) and who.isdigit():
        return users.get(int(who), who)
    return str(who) if who not in (None, "") else "unknown"


def parse_time(stamp: Any) -> datetime:
    """Label Studio's ISO time as naive UTC (the desk's convention); now when missing or bad."""
    try:
        parsed = datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    except ValueError:
        return datetime.now(UTC).replace(tzinfo=None)
    return parsed if parsed.tzinfo is None else parsed.astimezone(UTC).replace(tzinfo=None)
