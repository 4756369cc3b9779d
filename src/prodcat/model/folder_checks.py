"""Reading and checking a model folder's parts on load: model.json's format, the photo side, the
drift reference, and whether the encoders still compute the features the head learnt from. Each
refusal is a `ModelError` whose message names the folder, what differs and what to do."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prodcat import __version__
from prodcat.encoders.registry import get_encoder
from prodcat.model.encoder_files import TRAIN_EXTRA
from prodcat.monitor.reference import REFERENCE_FILE, Reference

MODEL_FORMAT = 1


class ModelError(ValueError):
    """A model directory that cannot be used as it is; the message says what differs."""


def read_photo_side(config: dict[str, Any], folder: Path) -> int | None:
    """model.json's photo side; None for a model saved before it was recorded."""
    side = config.get("photo_side")
    if side is None:
        return None
    if isinstance(side, bool) or not isinstance(side, int) or side < 1:
        raise ModelError(
            f"{folder}/model.json: photo_side is {side!r}; expected a positive whole number of "
            "pixels (or no photo_side at all)"
        )
    return side


def load_reference(folder: Path) -> Reference | None:
    path = folder / REFERENCE_FILE
    if not path.exists():
        return None
    try:
        return Reference.load(path)
    except ValueError as exc:
        raise ModelError(f"{folder}: the drift reference cannot be read: {exc}") from None


def read_model_json(folder: Path) -> dict[str, Any]:
    path = folder / "model.json"
    if not path.exists():
        raise ModelError(f"{folder} is not a prodcat model: it has no model.json")
    config: dict[str, Any] = json.loads(path.read_text())
    if config.get("format") != MODEL_FORMAT:
        raise ModelError(
            f"{path} has format {config.get('format')!r}; this prodcat reads format "
            f"{MODEL_FORMAT}: retrain with prodcat {__version__}"
        )
    return config


def check_encoder_versions(saved: dict[str, str], folder: Path, files: dict[str, Path]) -> None:
    """Refuse a model whose encoders now compute different features than at training time."""
    differences = []
    for name, version in saved.items():
        try:
            options = {"onnx_file": files[name]} if name in files else {}
            installed = get_encoder(name, **options).version
        except ImportError as exc:  # a folder without its encoders, in the base install
            raise ModelError(
                f"{folder} does not hold the encoder {name!r} (saved before model folders "
                f"kept their encoders) and this install cannot export it: {exc.name} is missing. "
                f"Install the training parts ({TRAIN_EXTRA}) to use it as it is, and there run "
                f"`prodcat pack {folder}` to add its encoders, or retrain it"
            ) from None
        except ValueError as exc:
            differences.append(f"{name}: not available here ({exc})")
            continue
        if installed != version:
            differences.append(f"{name}: trained with {version!r}, installed {installed!r}")
    if differences:
        raise ModelError(
            f"{folder} was trained with encoders that differ from the installed ones:\n  "
            + "\n  ".join(differences)
            + "\nits head would receive features it has never seen; retrain the model here"
        )
