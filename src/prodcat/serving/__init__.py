"""The REST API: a FastAPI app over the in-memory, torch-free prediction path.

    >>> from prodcat.serving import Settings, create_app
    >>> app = create_app(Settings(model_dir="model/"))   # or PRODCAT_MODEL_DIR=model/

`prodcat serve MODEL_DIR` runs it under uvicorn.
"""

from .app import create_app
from .settings import Settings

__all__ = ["Settings", "create_app"]
