"""How a task's photo reaches Label Studio: a data URL, Label Studio's local-files storage, or a
URL template over the stored photo path.

`inline` (the default) needs nothing set up in Label Studio: each photo is shrunk to at most
`max_side` pixels and put in the task as a `data:image/jpeg;base64,...` URL; the price is a tasks
file of some 10-40 KB a product. `local-files` links `/data/local-files/?d=<path relative to
LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT>` (Label Studio serves the file itself; it needs that root
set and a Local Files storage on the photos' folder); `url` fills a template such as
`https://cdn.example/{path}` with `{id}`, `{path}` and `{name}`. A photo that a mode cannot link
(outside the root) is inlined instead, and said so.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import quote

IMAGE_MODES = ("inline", "local-files", "url")
DEFAULT_MAX_SIDE = 512
LOCAL_FILES_PREFIX = "/data/local-files/?d="


@dataclass(frozen=True)
class Images:
    """`mode` one of IMAGE_MODES; `root`: LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT (local-files) or
    what `{path}` is relative to (url; absolute without its leading '/' when None)."""

    mode: str = "inline"
    root: Path | None = None
    template: str | None = None
    max_side: int = DEFAULT_MAX_SIDE

    def __post_init__(self) -> None:
        if self.mode not in IMAGE_MODES:
            raise ValueError(f"image mode {self.mode!r}: expected one of {', '.join(IMAGE_MODES)}")
        if self.mode == "local-files" and self.root is None:
            raise ValueError("local-files needs the root (LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT)")
        if self.mode == "url" and not self.template:
            raise ValueError("url needs a template, e.g. 'https://cdn.example/{path}'")
        if self.template:
            try:
                self.template.format(id="1", path="a/b.jpg", name="b.jpg")
            except (KeyError, IndexError, ValueError) as exc:
                raise ValueError(
                    f"image URL template {self.template!r}: {exc!r}; "
                    "expected fields {id}, {path} and {name} only"
                ) from None

    def url(self, product_id: str, image_path: str | None) -> tuple[str, str | None]:
        """The task's image field and, when it is not what the mode promised, why."""
        if not image_path:
            return "", "no photo stored for it: the task shows the title only"
        path = Path(image_path)
        if self.mode == "url" and self.template is not None:
            rel = self._relative(path)
            if rel is not None:
                fields = {"id": quote(product_id, safe=""), "name": quote(path.name)}
                return self.template.format(path=quote(rel, safe="/"), **fields), None
        elif self.mode == "local-files":
            rel = self._relative(path)
            if rel is not None:
                return LOCAL_FILES_PREFIX + quote(rel, safe="/"), None
        data, why = data_url(path, self.max_side)
        if self.mode == "inline" or why:
            return data, why
        return data, f"its photo {path} is outside {self.root}: inlined as a data URL"

    def _relative(self, path: Path) -> str | None:
        if self.root is None:
            return PurePosixPath(path.resolve().as_posix()).as_posix().lstrip("/")
        try:
            return path.resolve().relative_to(self.root.resolve()).as_posix()
        except ValueError:
            return None

    def setup_lines(self, photo_dirs: list[str]) -> list[str]:
        """What the user must set in Label Studio for these tasks' photos to show."""
        if self.mode == "inline":
            return ["photos are inlined as data URLs: nothing to set in Label Studio"]
        if self.mode == "url":
            return [f"photos load from {self.template}: Label Studio's browser must reach it"]
        root = self.root.resolve() if self.root else Path()
        lines = [
            "start Label Studio with LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true and "
            f"LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={root}",
        ]
        if any(Path(d).resolve() == root for d in photo_dirs):
            lines.append(
                f"some photos lie directly in {root}, which Label Studio refuses as a storage: "
                "give the folder above as --local-files-root"
            )
        for folder in storage_folders(photo_dirs, root):
            lines.append(
                "in the project: Settings > Cloud Storage > Add Source Storage > Local files, "
                f"absolute local path {folder} (do not sync it: the tasks come from prodcat)"
            )
        return lines


def storage_folders(photo_dirs: list[str], root: Path) -> list[str]:
    """The fewest folders under `root` (never `root` itself, which Label Studio refuses) whose
    Local Files storages cover every photo folder."""
    tops: set[str] = set()
    for folder in sorted(set(photo_dirs)):
        try:
            rel = Path(folder).resolve().relative_to(root)
        except ValueError:
            continue
        if rel.parts:
            tops.add(str(root / rel.parts[0]))
    return sorted(tops)


def data_url(path: Path, max_side: int = DEFAULT_MAX_SIDE) -> tuple[str, str | None]:
    """The photo as a JPEG data URL, shrunk to at most `max_side` pixels; ('', why) when it
    cannot be read."""
    from prodcat.catalogue.images import ImageError, load_image

    try:  # the catalogue's safe decoder: upright, RGB, bombs refused
        image = load_image(path, draft_size=max_side)
        image.thumbnail((max_side, max_side))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=85)
    except (OSError, ImageError) as exc:
        return "", f"its photo {path} cannot be read ({exc}): the task shows the title only"
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"), None
