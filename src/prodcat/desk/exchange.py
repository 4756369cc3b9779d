"""Getting answers out and in: the labels CSV, Label Studio tasks and annotation exports."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from prodcat.desk.db import Database, QueueItem, ReviewAnswer, utcnow

LABEL_COLUMNS = ("id", "category", "reviewer", "time", "model_suggestion", "agreed", "new_category")
LS_FROM, LS_TO = "category", "image"


def export_labels(db: Database, out: Path) -> int:
    """One row per answer, oldest first; returns the number of rows."""
    with db.session() as s:
        answers = list(
            s.scalars(select(ReviewAnswer).order_by(ReviewAnswer.created_at, ReviewAnswer.id))
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(LABEL_COLUMNS)
        for a in answers:
            writer.writerow(
                [
                    a.product_id,
                    a.category,
                    a.reviewer,
                    a.created_at.isoformat(timespec="seconds") + "Z",
                    a.model_suggestion,
                    str(a.agreed).lower(),
                    str(a.new_category).lower(),
                ]
            )
    return len(answers)


def labelstudio_tasks(db: Database, image_url: str = "/image/{id}") -> list[dict[str, Any]]:
    """The open queue as Label Studio tasks, the model's top-5 as its prediction."""
    with db.session() as s:
        items = list(
            s.scalars(select(QueueItem).where(QueueItem.queued).order_by(QueueItem.priority))
        )
    tasks = []
    for item in items:
        top = json.loads(item.top_json)
        tasks.append(
            {
                "data": {
                    "product_id": item.product_id,
                    "title": item.title,
                    "image": image_url.format(id=item.product_id),
                    "suggestions": [c for c, _ in top],
                },
                # A label check shows no answer as the model's: none would be preselected.
                "predictions": []
                if item.decision == "check"
                else [
                    {
                        "model_version": item.model_version,
                        "score": item.probability,
                        "result": [
                            {
                                "from_name": LS_FROM,
                                "to_name": LS_TO,
                                "type": "choices",
                                "value": {"choices": [item.category]},
                            }
                        ],
                    }
                ],
            }
        )
    return tasks


def labelstudio_config(paths: list[str]) -> str:
    """A labelling interface for the tasks: the photo, the title, one choice per path."""
    choices = "\n".join(f'    <Choice value="{_xml(p)}"/>' for p in paths)
    return (
        "<View>\n"
        f'  <Image name="{LS_TO}" value="$image"/>\n'
        '  <Text name="title" value="$title"/>\n'
        f'  <Choices name="{LS_FROM}" toName="{LS_TO}" choice="single" showInline="false">\n'
        f"{choices}\n  </Choices>\n</View>\n"
    )


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")


@dataclass
class ImportResult:
    added: int = 0
    already: int = 0
    problems: list[str] = field(default_factory=list)  # one line per task left out, with why


def import_labelstudio(db: Database, export: Path) -> ImportResult:
    """Label Studio's JSON export (tasks with annotations) -> answers, reviewer
    'labelstudio:<annotator>'. A task that cannot be read is reported and the rest go on."""
    try:
        tasks = json.loads(export.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{export}: not a Label Studio JSON export ({exc})") from None
    if not isinstance(tasks, list):
        raise ValueError(f"{export}: expected a JSON list of tasks, got {type(tasks).__name__}")
    result = ImportResult()
    with db.session() as s, s.begin():
        for n, task in enumerate(tasks, 1):
            for answer in _task_answers(task, n, result.problems):
                pid, reviewer, category, when = answer
                item = s.get(QueueItem, pid)
                if item is None:
                    result.problems.append(f"task {n}: product {pid!r} is not in the queue")
                    continue
                mine = select(ReviewAnswer).where(
                    ReviewAnswer.product_id == pid, ReviewAnswer.reviewer == reviewer
                )
                if s.scalar(mine) is not None:
                    result.already += 1
                    continue
                s.add(
                    ReviewAnswer(
                        product_id=pid,
                        reviewer=reviewer,
                        category=category,
                        new_category=False,
                        model_suggestion=item.category,
                        agreed=category == item.category,
                        source="labelstudio",
                        created_at=when,
                    )
                )
                s.flush()
                result.added += 1
    return result


def _task_answers(task: Any, n: int, problems: list[str]) -> list[tuple[str, str, str, datetime]]:
    if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
        problems.append(f"task {n}: expected an object with 'data'")
        return []
    pid = task["data"].get("product_id")
    if pid is None:
        problems.append(f"task {n}: data.product_id is missing")
        return []
    out = []
    for annotation in task.get("annotations") or []:
        if annotation.get("was_cancelled"):
            continue
        choices = [
            c
            for r in annotation.get("result") or []
            if r.get("type") == "choices"
            for c in (r.get("value") or {}).get("choices") or []
        ]
        if len(choices) != 1:
            problems.append(f"task {n} (product {pid}): expected one choice, got {choices}")
            continue
        who = annotation.get("completed_by")
        if isinstance(who, dict):
            who = who.get("email") or who.get("id")
        out.append((str(pid), f"labelstudio:{who}", str(choices[0]), _when(annotation)))
    return out


def _when(annotation: dict[str, Any]) -> datetime:
    stamp = annotation.get("created_at")
    try:
        parsed = datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
        return parsed.replace(tzinfo=None) if parsed.tzinfo is None else _naive_utc(parsed)
    except ValueError:
        return utcnow()


def _naive_utc(value: datetime) -> datetime:
    from datetime import UTC

    return value.astimezone(UTC).replace(tzinfo=None)
