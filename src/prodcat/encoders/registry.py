"""Encoders by name, so configs, the CLI and benchmarks can say "effnet-lite0" or "tfidf".

The built-in factories import their modules only when called: listing encoders or building the
text ones never loads onnxruntime, and nothing here ever loads torch.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from .base import PHOTO_BATCH, TITLE_BATCH, Encoder, Modality

MODALITIES: tuple[Modality, ...] = ("image", "text")


@dataclass(frozen=True)
class EncoderInfo:
    """What `list_encoders` tells about a registered encoder."""

    name: str
    modality: Modality
    description: str
    # "features": a vector a head reads as it is; "activations": a photo network's frozen trunk,
    # whose output a fine-tune head runs the rest of the network on; "words": a sparse bag of
    # words fitted on the training titles (a title head fits it itself).
    output: Literal["features", "activations", "words"] = "features"
    # A network, run under ONNX Runtime: it takes the `backend` option ("torch" runs the
    # reference the benchmarks compare against, where the weights exist in torch).
    neural: bool = False


@dataclass(frozen=True)
class _Entry:
    info: EncoderInfo
    factory: Callable[..., Encoder]


_REGISTRY: dict[str, _Entry] = {}


def register(
    name: str,
    factory: Callable[..., Encoder],
    *,
    modality: str,
    description: str,
    output: Literal["features", "activations", "words"] = "features",
    neural: bool = False,
) -> None:
    """Make `get_encoder(name, **options)` call `factory(**options)`.

    Registering a name twice is an error rather than a silent override: two plugins claiming
    "tfidf" would otherwise make results depend on import order.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"an encoder name must be a non-empty string, got {name!r}")
    if modality not in MODALITIES:
        raise ValueError(f"modality={modality!r} is not valid; expected one of {list(MODALITIES)}")
    if not callable(factory):
        raise TypeError(f"factory for {name!r} must be callable, got {type(factory).__name__}")
    if name in _REGISTRY:
        raise ValueError(
            f"an encoder named {name!r} is already registered; choose another name "
            "or unregister the existing one first"
        )
    info = EncoderInfo(
        name=name,
        modality=modality,
        description=description,
        output=output,
        neural=neural,
    )
    _REGISTRY[name] = _Entry(info=info, factory=factory)


def unregister(name: str) -> None:
    """Remove a registered encoder (tests and plugins that replace one)."""
    if name not in _REGISTRY:
        raise ValueError(f"no encoder named {name!r} is registered; known: {_known()}")
    del _REGISTRY[name]


def get_encoder(name: str, **options: Any) -> Encoder:
    """Build the encoder registered as `name` with the given options (e.g. size=160).

    An image encoder's name may carry its input size, "effnet-lite0@160": models, caches and
    configs then name the encoder they used in one string.
    """
    base, size = parse_encoder_name(name)
    entry = _REGISTRY.get(base)
    if entry is None:
        raise ValueError(f"unknown encoder {base!r}; known encoders: {_known()}")
    if size is not None:
        if options.get("size", size) != size:
            raise ValueError(f"{name!r} names size {size}, but the option says {options['size']}")
        options = {**options, "size": size}
    _check_options(name, entry.factory, options)
    return entry.factory(**options)


def parse_encoder_name(name: str) -> tuple[str, int | None]:
    """ "effnet-lite0@160" -> ("effnet-lite0", 160); a name without "@" -> (name, None)."""
    base, sep, size = name.partition("@")
    if not sep:
        return name, None
    if not size.isdigit() or int(size) < 1:
        raise ValueError(
            f"encoder {name!r}: the part after '@' must be the input size in pixels, "
            f"e.g. {base}@160; got {size!r}"
        )
    return base, int(size)


def encoder_name(base: str, size: int | None) -> str:
    """The inverse of `parse_encoder_name`."""
    return base if size is None else f"{base}@{size}"


def list_encoders() -> list[EncoderInfo]:
    """Every registered encoder, sorted by modality then name."""
    return sorted((e.info for e in _REGISTRY.values()), key=lambda i: (i.modality, i.name))


def encoder_info(name: str) -> EncoderInfo:
    """What the registry knows of an encoder, by name ("effnet-lite0@160" works too)."""
    base = parse_encoder_name(name)[0]
    entry = _REGISTRY.get(base)
    if entry is None:
        raise ValueError(f"unknown encoder {base!r}; known encoders: {_known()}")
    return entry.info


def _known() -> str:
    return ", ".join(sorted(_REGISTRY)) or "(none)"


def _check_options(name: str, factory: Callable[..., Encoder], options: dict[str, Any]) -> None:
    """Reject unknown options with the accepted ones named, instead of a bare TypeError."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # builtins without a signature: let the call decide
        return
    params = signature.parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return
    accepted = sorted(
        p.name
        for p in params
        if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    )
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"encoder {name!r} does not take the option(s) {unknown}; "
            f"it accepts: {', '.join(accepted) or '(no options)'}"
        )


# -- built-in encoders -------------------------------------------------------------------------


def _effnet_factory(variant: str) -> Callable[..., Encoder]:
    def build(
        *,
        size: int | None = None,
        onnx_dir: Any = None,
        threads: int | None = None,
        batch_size: int = PHOTO_BATCH,
        backend: str = "onnx",
        onnx_file: Any = None,
    ) -> Encoder:
        from .image import EfficientNetLiteEncoder

        return EfficientNetLiteEncoder(
            variant,
            size=size,
            onnx_dir=onnx_dir,
            threads=threads,
            batch_size=batch_size,
            backend=backend,  # type: ignore[arg-type]
            onnx_file=onnx_file,
        )

    return build


def _effnet_trunk_factory(variant: str) -> Callable[..., Encoder]:
    def build(
        *,
        cut: int | None = None,
        size: int | None = None,
        onnx_dir: Any = None,
        threads: int | None = None,
        batch_size: int = PHOTO_BATCH,
        backend: str = "onnx",
        onnx_file: Any = None,
    ) -> Encoder:
        """cut=None: the variant's default cut (`EffNetSpec.default_cut`: 14 lite0, 19 lite2)."""
        from .image import EfficientNetLiteEncoder, effnet_spec

        if cut is None:
            cut = effnet_spec(variant).default_cut
        return EfficientNetLiteEncoder(
            variant,
            size=size,
            onnx_dir=onnx_dir,
            threads=threads,
            batch_size=batch_size,
            backend=backend,  # type: ignore[arg-type]
            cut=cut,
            onnx_file=onnx_file,
        )

    return build


def _effnet_tuned_factory(variant: str) -> Callable[..., Encoder]:
    def build(
        *,
        onnx_file: Any = None,
        size: int | None = None,
        threads: int | None = None,
        batch_size: int = PHOTO_BATCH,
        backend: str = "onnx",
    ) -> Encoder:
        from .image import TunedEffNetEncoder

        return TunedEffNetEncoder(
            variant,
            onnx_file=onnx_file,
            size=size,
            threads=threads,
            batch_size=batch_size,
            backend=backend,  # type: ignore[arg-type]
        )

    return build


def _sparse_factory(kind: str) -> Callable[..., Encoder]:
    def build(
        *,
        ngram_range: tuple[int, int] | None = None,
        min_df: float = 1,
        token_pattern: str | None = None,
        lowercase: bool = True,
    ) -> Encoder:
        from .text import BowEncoder, TfidfEncoder
        from .words import TOKEN_PATTERN

        cls = BowEncoder if kind == "bow" else TfidfEncoder
        return cls(
            ngram_range=ngram_range,
            min_df=min_df,
            token_pattern=TOKEN_PATTERN if token_pattern is None else token_pattern,
            lowercase=lowercase,
        )

    return build


def _minilm(
    *,
    onnx_dir: Any = None,
    threads: int | None = None,
    batch_size: int = TITLE_BATCH,
    backend: str = "onnx",
    onnx_file: Any = None,
) -> Encoder:
    from .text import MiniLMEncoder

    return MiniLMEncoder(
        onnx_dir=onnx_dir,
        threads=threads,
        batch_size=batch_size,
        backend=backend,  # type: ignore[arg-type]
        onnx_file=onnx_file,
    )


def _hashbow(*, dim: int = 4096) -> Encoder:
    from .hashing import HashedWordsEncoder

    return HashedWordsEncoder(dim=dim)


def _register_builtins() -> None:
    register(
        "effnet-lite0",
        _effnet_factory("effnet-lite0"),
        modality="image",
        description="EfficientNet-Lite0 ImageNet features, 1280-d, 224 px (option size), ONNX",
        neural=True,
    )
    register(
        "effnet-lite2",
        _effnet_factory("effnet-lite2"),
        modality="image",
        description="EfficientNet-Lite2 ImageNet features, 1280-d, 260 px (option size), ONNX",
        neural=True,
    )
    register(
        "effnet-lite0-trunk",
        _effnet_trunk_factory("effnet-lite0"),
        modality="image",
        description="EfficientNet-Lite0 activations entering block `cut` (default 14: "
        "192x7x7 at 224 px), flattened, for fine-tuning the last blocks, ONNX",
        output="activations",
        neural=True,
    )
    register(
        "effnet-lite2-trunk",
        _effnet_trunk_factory("effnet-lite2"),
        modality="image",
        description="EfficientNet-Lite2 activations entering block `cut` (default 19: "
        "208x9x9 at 260 px), flattened, for fine-tuning the last blocks, ONNX",
        output="activations",
        neural=True,
    )
    for variant in ("effnet-lite0", "effnet-lite2"):
        register(
            f"{variant}-tuned",
            _effnet_tuned_factory(variant),
            modality="image",
            description=f"{variant} with every layer fine-tuned on a catalogue (prodcat train "
            "--fine-tune-whole), 1280-d, from the model folder's ONNX file (option onnx_file)",
            neural=True,
        )
    register(
        "bow",
        _sparse_factory("bow"),
        modality="text",
        description="binary bag of words fitted on training titles, sparse",
        output="words",
    )
    register(
        "tfidf",
        _sparse_factory("tfidf"),
        modality="text",
        description="TF-IDF of words and word pairs fitted on training titles, sparse",
        output="words",
    )
    register(
        "minilm",
        _minilm,
        modality="text",
        description="all-MiniLM-L6-v2 sentence embeddings, 384-d, L2-normalised, ONNX",
        neural=True,
    )
    register(
        "hashbow",
        _hashbow,
        modality="text",
        description="hashed binary bag of words and word pairs, 4096-d dense, nothing to fit",
    )


def is_trunk(encoder: str | None) -> bool:
    """Whether an image encoder (e.g. "effnet-lite0-trunk@160") yields fine-tuning activations."""
    if not encoder:
        return False
    entry = _REGISTRY.get(parse_encoder_name(encoder)[0])
    return entry is not None and entry.info.output == "activations"


def fits_words(encoder: str) -> bool:
    """Whether a text encoder is a bag of words fitted on the training titles (bow, tfidf)."""
    return all(encoder_info(part).output == "words" for part in split_encoders(encoder))


def split_encoders(name: str) -> list[str]:
    """'minilm+hashbow' -> ['minilm', 'hashbow']: a text input made of several encoders."""
    return [part.strip() for part in name.split("+") if part.strip()]


_register_builtins()
