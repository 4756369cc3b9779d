"""The Ray engine: `prodcat predict --engine ray` and `prodcat encode --engine ray` on a cluster.

`cluster.py` connects to Ray (imported lazily: `pip install "prodcat[ray]"`) and plans the
workers; `rows.py` reads the input on the cluster into plain rows with the local engine's checks;
`predict.py` labels them in actors, one model per actor; `encode.py` fills the shared feature
cache, each worker writing its own packs. Nothing here imports ray at import time.
"""

from prodcat.distributed.cluster import RAY_MISSING, RayEngineError

__all__ = ["RAY_MISSING", "RayEngineError"]
