"""Label Studio for prodcat's review queue: tasks out (photos that display, the <Taxonomy> or
<Choices> interface), answers back in (edits, skips, overlap, annotators' names, proposed
categories), and a REST sync that does both.

Modules: `images` (how a photo reaches Label Studio), `interface` (the labelling config, reading a
category back), `tasks` (export, with the record of what was exported), `reading` (JSON and
JSON_MIN exports), `importer` (into the desk), `api` (sync over Label Studio's REST API).
"""

from prodcat.desk.labelstudio.images import IMAGE_MODES, Images
from prodcat.desk.labelstudio.importer import ImportResult, import_labelstudio
from prodcat.desk.labelstudio.interface import INTERFACES, labelstudio_config
from prodcat.desk.labelstudio.reading import load_users
from prodcat.desk.labelstudio.tasks import (
    Export,
    labelstudio_tasks,
    record_exported,
    write_tasks,
)

__all__ = [
    "IMAGE_MODES",
    "INTERFACES",
    "Export",
    "Images",
    "ImportResult",
    "import_labelstudio",
    "labelstudio_config",
    "labelstudio_tasks",
    "load_users",
    "record_exported",
    "write_tasks",
]
