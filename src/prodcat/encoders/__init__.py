"""The encoder registry: named encoders from product photos or titles to feature vectors.

    >>> from prodcat.encoders import get_encoder, list_encoders
    >>> enc = get_encoder("effnet-lite0", size=160)   # exported to ONNX on first use
    >>> enc = get_encoder("effnet-lite0@160")          # the same: the size in the name
    >>> feats = enc.encode([image])                     # float32 (1, 1280)
    >>> enc.version                                     # keys the feature cache

Each encoder carries its preprocessing and a version string that changes whenever its outputs
could change. Inference runs on ONNX Runtime; torch is imported only to export a model once
(`prodcat.encoders.export`) or by the `backend="torch"` reference.
"""

from .base import Encoder, EncoderOutput, ImageEncoder, TextEncoder, file_sha256
from .registry import (
    EncoderInfo,
    encoder_name,
    get_encoder,
    list_encoders,
    parse_encoder_name,
    register,
    unregister,
)

__all__ = [
    "Encoder",
    "EncoderInfo",
    "EncoderOutput",
    "ImageEncoder",
    "TextEncoder",
    "encoder_name",
    "file_sha256",
    "get_encoder",
    "list_encoders",
    "parse_encoder_name",
    "register",
    "unregister",
]
