"""`prodcat pack MODEL`: put the encoders into a model folder saved before folders kept them, so
that it predicts and serves in the base install (`pip install prodcat`, no torch)."""

from __future__ import annotations

import typer

from prodcat.cli.common import TRAIN_MODULES, ModelDir, fail, out, require_extra


def pack_cmd(model_dir: ModelDir) -> None:
    """Copy the ONNX encoders and tokenizer files a model runs from into its folder (exporting
    them if need be) and list them, with their sha256, in its model.json."""
    require_extra("prodcat pack", "train", TRAIN_MODULES)
    from prodcat.model.bundle import ModelError, model_version, pack_encoders

    try:
        added = pack_encoders(model_dir)
    except ModelError as exc:
        fail(str(exc))
    if not added:
        out.print(f"{model_dir} already holds its encoders: nothing to do")
        return
    out.print(
        f"{model_dir}: added {', '.join(added)}; it now predicts without torch "
        f"(model version {model_version(model_dir)})"
    )


def register(app: typer.Typer) -> None:
    app.command("pack", short_help="Put the encoders into an older model folder.")(pack_cmd)
