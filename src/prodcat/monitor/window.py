"""The API's rolling window: the last N products answered, in bounded memory, thread-safe."""

from __future__ import annotations

import threading
from collections import deque

import numpy as np

from prodcat.monitor.observations import FIELDS, Observations, empty


class RollingWindow:
    """The most recent `size` products' observations (older ones drop out as new ones come)."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"drift window size {size}; expected 1 or more products")
        self.size = size
        self._rows: deque[tuple[object, ...]] = deque(maxlen=size)
        self._lock = threading.Lock()
        self.seen = 0  # products added since the start, the window's own ones included

    def add(self, observations: Observations) -> None:
        columns = [getattr(observations, name) for name in FIELDS]
        with self._lock:
            self._rows.extend(zip(*columns, strict=True))
            self.seen += len(observations)

    def __len__(self) -> int:
        return len(self._rows)

    def observations(self) -> Observations:
        """A snapshot of the window, oldest first."""
        with self._lock:
            rows = list(self._rows)
        if not rows:
            return empty()
        return Observations(*(np.array(column) for column in zip(*rows, strict=True)))


__all__ = ["RollingWindow"]
