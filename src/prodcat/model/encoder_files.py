"""The encoders' files inside a model folder: what `Model.save` writes so that the folder predicts
on its own, and the checks `Model.load` runs on them.

`photo_encoder.onnx` is a photo network fine-tuned on the catalogue (`--fine-tune-whole`). Every
other neural encoder gets `encoders/<name>/` with its ONNX export, plus MiniLM's tokenizer files:
an encoder built with `onnx_file=<that folder>/model.onnx` runs from them without torch or the
weight packages. model.json lists each file with its sha256 (`encoder_file_sha256`), so a file
changed or lost in a copy is refused by name rather than giving other features.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from prodcat.encoders.base import file_sha256
from prodcat.encoders.image import TUNED_SUFFIX
from prodcat.encoders.registry import parse_encoder_name
from prodcat.paths import tuned_scratch_dir

if TYPE_CHECKING:
    from prodcat.encoders.base import Encoder

ENCODER_FILE = "photo_encoder.onnx"  # a fine-tuned photo network inside the model folder
ENCODERS_DIR = "encoders"  # the other neural encoders' files, one folder per encoder
TRAIN_EXTRA = 'pip install "prodcat[train]"'


class EncoderFilesError(ValueError):
    """A model folder's encoder files are missing or differ from those saved with it."""


def save_encoder_files(
    folder: Path,
    encoder_files: dict[str, Path],
    names: Sequence[str],
    get_encoder: Callable[[str], Encoder],
) -> dict[str, str]:
    """Put the files the encoders `names` run from into `folder`; {name: file there}.

    `encoder_files` ({name: file the model runs it from}) is updated to the saved copies. A tuned
    photo network fresh from training (in the scratch folder) is moved, any other copied; the
    other encoders' files are hard-linked from the export cache where they can be.
    """
    tuned = {n: Path(p) for n, p in encoder_files.items() if is_tuned(n)}
    if len(tuned) > 1:  # only the photo encoder is ever tuned
        raise EncoderFilesError(f"a model holds one tuned encoder, not {sorted(tuned)}")
    target = folder / ENCODER_FILE
    for name, path in tuned.items():
        if path.resolve() == target.resolve():
            continue
        if path.resolve().parent == tuned_scratch_dir().resolve():
            shutil.move(path, target)
            encoder_files[name] = target
        else:
            shutil.copyfile(path, target)
    saved = {name: ENCODER_FILE for name in tuned}
    for name in names:
        if name in tuned:
            continue
        needed = get_encoder(name).files()
        if not needed:
            continue
        relative = f"{ENCODERS_DIR}/{folder_name(name)}"
        for file_name, source in needed.items():
            link_or_copy(Path(source), folder / relative / file_name)
        encoder_files[name] = folder / relative / "model.onnx"
        saved[name] = f"{relative}/model.onnx"
    return saved


def is_tuned(encoder: str) -> bool:
    """Whether `encoder` is a photo network fine-tuned on the catalogue ("effnet-lite0-tuned@160"):
    its file is the model's `photo_encoder.onnx`, wherever training left it."""
    return parse_encoder_name(encoder)[0].endswith(TUNED_SUFFIX)


def folder_name(encoder: str) -> str:
    """An encoder's folder in `encoders/`: its name with "@" as "-" ("effnet-lite0-224")."""
    return encoder.replace("@", "-")


def file_hashes(folder: Path, files: dict[str, str]) -> dict[str, str]:
    """{file: sha256} for every file the encoders run from (their folders whole), relative to
    the model folder."""
    listed = set()
    for file in files.values():
        parent = (folder / file).parent
        if parent == folder:
            listed.add(file)
        else:
            listed |= {p.relative_to(folder).as_posix() for p in parent.iterdir() if p.is_file()}
    return {name: file_sha256(folder / name) for name in sorted(listed)}


def check_encoder_files(folder: Path, hashes: dict[str, str], files: dict[str, str]) -> None:
    """Refuse a folder whose encoder files (`hashes`: {file: sha256}) are missing or changed since
    they were saved; each named with its encoder (`files`: {encoder: its main file})."""
    owners = {str(Path(file).parent): name for name, file in files.items()}
    owners |= {file: name for name, file in files.items()}
    problems = []
    for name, expected in sorted(hashes.items()):
        path = folder / name
        owner = owners.get(name, owners.get(str(Path(name).parent), "?"))
        if not path.is_file():
            problems.append(f"{name} (encoder {owner}) does not exist")
        elif file_sha256(path) != expected:
            problems.append(f"{name} (encoder {owner}) differs from the file saved with the model")
    if problems:
        raise EncoderFilesError(
            f"{folder}: its encoder files cannot be used:\n  "
            + "\n  ".join(problems)
            + "\ncopy the whole model folder again from where it was trained"
        )


def link_or_copy(source: Path, target: Path) -> None:
    """Hard-link an ONNX export to `target` (the export cache replaces files, never rewrites
    them, so the link keeps its content; 100 MB not copied per saved model), or copy it (other
    files, such as a package's tokenizer, and across file systems); atomic either way."""
    if target.exists() and target.resolve() == source.resolve():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        if source.suffix != ".onnx":
            raise OSError("copied, not linked")
        tmp.hardlink_to(source)
    except OSError:
        shutil.copyfile(source, tmp)
    tmp.replace(target)
