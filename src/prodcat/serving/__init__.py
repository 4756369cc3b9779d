"""The REST API: a FastAPI app over the in-memory, torch-free prediction path.

    >>> from prodcat.serving import Settings, create_app
    >>> app = create_app(Settings(model_dir="model/"))   # or PRODCAT_MODEL_DIR=model/

`prodcat serve MODEL_DIR` runs it under uvicorn. The names are imported on first use, so that
`prodcat-serve --help` (`serving.command`, inside this package) does not load FastAPI and the model.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import create_app
    from .settings import Settings

_WHERE = {"create_app": ".app", "Settings": ".settings"}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name], __name__), name)


__all__ = ["Settings", "create_app"]
