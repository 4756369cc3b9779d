"""`prodcat review export-labelstudio`, `import-labelstudio` and `sync-labelstudio`: the review
queue in Label Studio and its answers back (registered by prodcat.cli on the review group)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from prodcat.cli import common
from prodcat.cli.common import DEFAULT_DB
from prodcat.cli.desk import DbUrl, _db, review_app

if TYPE_CHECKING:
    from prodcat.desk.labelstudio import Images, ImportResult

Interface = Annotated[
    str,
    typer.Option(
        "--interface",
        metavar="KIND",
        help="taxonomy (Label Studio's <Taxonomy> over the category tree) or choices (flat).",
    ),
]
Preselect = Annotated[
    bool,
    typer.Option(
        "--preselect", help="Send the model's answer as a prediction Label Studio pre-selects."
    ),
]
Everything = Annotated[
    bool,
    typer.Option(
        "--all",
        help="Every queued product, answered or exported before (default: the open ones not "
        "exported yet).",
    ),
]
ImageUrl = Annotated[
    str | None,
    typer.Option(
        metavar="TEMPLATE",
        help="Photo URL template, e.g. 'https://cdn.example/{path}': {id} the product id, {path} "
        "the stored photo path (relative to --photo-root), {name} its file name.",
    ),
]
LocalFilesRoot = Annotated[
    Path | None,
    typer.Option(
        metavar="DIR",
        help="Link photos through Label Studio's local-files storage: the folder set as its "
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT.",
    ),
]
PhotoRoot = Annotated[
    Path | None,
    typer.Option(metavar="DIR", help="What {path} in --image-url is relative to."),
]
MaxSide = Annotated[
    int,
    typer.Option(metavar="PIXELS", min=32, help="Inlined photos are shrunk to this size at most."),
]


def images_of(
    image_url: str | None, local_files_root: Path | None, photo_root: Path | None, max_side: int
) -> Images:
    """--image-url, else --local-files-root, else data URLs (the default: they show with nothing
    set up in Label Studio)."""
    from prodcat.desk.labelstudio import Images

    if image_url and local_files_root:
        common.fail("give --image-url or --local-files-root, not both")
    try:
        if image_url:
            return Images("url", root=photo_root, template=image_url, max_side=max_side)
        if local_files_root:
            return Images("local-files", root=local_files_root, max_side=max_side)
        return Images("inline", max_side=max_side)
    except ValueError as exc:
        common.fail(str(exc))


def export_cmd(
    out_file: Annotated[
        Path, typer.Option("--out", metavar="JSON", help="Label Studio tasks JSON to write.")
    ],
    config: Annotated[
        Path | None,
        typer.Option(metavar="XML", help="Also write the labelling interface XML here."),
    ] = None,
    interface: Interface = "taxonomy",
    preselect: Preselect = False,
    everything: Everything = False,
    image_url: ImageUrl = None,
    local_files_root: LocalFilesRoot = None,
    photo_root: PhotoRoot = None,
    max_side: MaxSide = 512,
    db: DbUrl = DEFAULT_DB,
) -> None:
    """Export the open queue as Label Studio tasks: photo, title, the model's top suggestions.

    A product is exported once: the next export writes only products exported never before, so
    importing both files into one project never duplicates a task (--all writes everything, for
    a new project). Photos are inlined as data URLs unless --local-files-root or --image-url say
    otherwise; what Label Studio needs set up is printed."""
    from prodcat.desk.labelstudio import (
        INTERFACES,
        labelstudio_config,
        labelstudio_tasks,
        record_exported,
        write_tasks,
    )
    from prodcat.desk.queue import taxonomy

    if interface not in INTERFACES:
        common.fail(f"--interface {interface!r}: expected one of {', '.join(INTERFACES)}")
    images = images_of(image_url, local_files_root, photo_root, max_side)
    database = _db(db)
    export = labelstudio_tasks(
        database, images, everything=everything, kind=interface, preselect=preselect
    )
    try:
        write_tasks(export.tasks, out_file)
        if config is not None:
            config.write_text(labelstudio_config(taxonomy(database), interface), encoding="utf-8")
    except OSError as exc:
        common.fail(f"cannot write {exc.filename}: {exc.strerror}")
    record_exported(database, [t["data"]["product_id"] for t in export.tasks])
    common.out.print(
        f"{len(export.tasks):,} tasks: {out_file}; {export.already:,} open products Label Studio "
        f"has already; {len(export.changed):,} re-scored since their export"
        + (" (sync-labelstudio updates them in place)" if export.changed else "")
    )
    for line in images.setup_lines(export.photo_dirs):
        common.out.print(f"photos: {line}")
    for problem in export.problems[:20]:
        common.warn(problem)
    if config is not None:
        common.out.print(f"labelling interface ({interface}): {config}")


def import_cmd(
    export: Annotated[
        Path,
        typer.Argument(metavar="EXPORT", help="Label Studio JSON or JSON_MIN export."),
    ],
    users: Annotated[
        Path | None,
        typer.Option(
            metavar="JSON",
            help="Label Studio's user list (GET /api/users) to name annotators by email.",
        ),
    ] = None,
    db: DbUrl = DEFAULT_DB,
) -> None:
    """Import Label Studio's answers (reviewer 'labelstudio:<annotator email>').

    An annotation edited since the last import replaces its answer; a skip is kept as a skip; a
    category outside the taxonomy comes in as a proposed new one; answers beyond the desk's
    overlap setting stay out, each with a message naming the task and product."""
    from prodcat.desk.labelstudio import import_labelstudio, load_users

    try:
        names = load_users(users) if users is not None else {}
        result = import_labelstudio(_db(db), export, names)
    except ValueError as exc:
        common.fail(str(exc))
    report(result)


def report(result: ImportResult) -> None:
    common.out.print(
        f"{result.added:,} answers imported, {result.replaced:,} replaced by a later edit, "
        f"{result.already:,} already there, {result.skips:,} skips recorded, "
        f"{result.proposed:,} proposed new categories, {len(result.problems):,} left out"
    )
    for line in result.notes[:50]:
        common.out.print(f"  {line}")
    for line in result.problems[:50]:
        common.warn(line)
    hidden = max(0, len(result.notes) - 50) + max(0, len(result.problems) - 50)
    if hidden:
        common.out.print(f"  ... and {hidden:,} more lines")


def sync_cmd(
    url: Annotated[str, typer.Option(metavar="URL", help="Label Studio, e.g. http://host:8080")],
    token: Annotated[
        str,
        typer.Option(
            metavar="TOKEN",
            envvar="LABEL_STUDIO_TOKEN",
            help="API token (Account & Settings), or set LABEL_STUDIO_TOKEN.",
        ),
    ],
    project: Annotated[
        int | None, typer.Option(metavar="N", help="The project's id (in its URL).")
    ] = None,
    title: Annotated[
        str | None,
        typer.Option(metavar="TEXT", help="Create a project with this title instead of --project."),
    ] = None,
    interface: Interface = "taxonomy",
    preselect: Preselect = False,
    everything: Everything = False,
    image_url: ImageUrl = None,
    local_files_root: LocalFilesRoot = None,
    photo_root: PhotoRoot = None,
    max_side: MaxSide = 512,
    db: DbUrl = DEFAULT_DB,
) -> None:
    """Push the open queue to a Label Studio project and pull its answers, over its REST API.

    Tasks Label Studio has are matched by product id and never imported twice (one re-scored
    since is updated in place); answers come back as import-labelstudio reads them, annotators
    named by email. With --local-files-root the photos' Local Files storage is added too."""
    from prodcat.desk.labelstudio import INTERFACES, labelstudio_config
    from prodcat.desk.labelstudio.api import LabelStudio, LabelStudioError, sync
    from prodcat.desk.queue import taxonomy
    from prodcat.desk.review import answers_per_product

    if (project is None) == (title is None):
        common.fail("give --project N (an existing project) or --title TEXT (a new one)")
    if interface not in INTERFACES:
        common.fail(f"--interface {interface!r}: expected one of {', '.join(INTERFACES)}")
    images = images_of(image_url, local_files_root, photo_root, max_side)
    database = _db(db)
    try:
        ls = LabelStudio(url, token)
        if project is None:
            with database.session() as s:
                overlap = answers_per_product(s)
            config = labelstudio_config(taxonomy(database), interface)
            project = ls.create_project(str(title), config, overlap)
            common.out.print(f"project {project} created: {url.rstrip('/')}/projects/{project}")
        result = sync(
            database,
            ls,
            project,
            images,
            kind=interface,
            preselect=preselect,
            everything=everything,
        )
    except LabelStudioError as exc:
        common.fail(str(exc))
    common.out.print(
        f"{result.pushed:,} tasks pushed, {result.updated:,} updated in place, "
        f"{result.already:,} already in project {project}"
    )
    for line in result.setup:
        common.out.print(f"photos: {line}")
    for problem in result.photo_problems[:20]:
        common.warn(problem)
    report(result.imported)


def register(app: typer.Typer) -> None:
    """On `prodcat review` (the desk's group), not on `app` itself."""
    del app
    review_app.command(
        "export-labelstudio", short_help="Export the open queue as Label Studio tasks."
    )(export_cmd)
    review_app.command("import-labelstudio", short_help="Import Label Studio's answers.")(
        import_cmd
    )
    review_app.command(
        "sync-labelstudio", short_help="Push tasks to and pull answers from Label Studio."
    )(sync_cmd)
