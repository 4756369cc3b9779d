"""Connecting to Ray and sharing its CPUs among workers; Ray is imported only here, lazily."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import Any

RAY_MISSING = 'the Ray engine needs Ray; install it with: pip install "prodcat[ray]"'


class RayEngineError(RuntimeError):
    """The Ray engine cannot run as asked (no Ray, a bad --workers, an unreadable input)."""


def require_ray() -> ModuleType:
    """`ray` with Ray Data, or a RayEngineError naming the extra to install."""
    try:
        import ray
        import ray.data  # the engine reads and maps with Ray Data
    except ImportError:
        raise RayEngineError(RAY_MISSING) from None
    return ray


@contextmanager
def connected(address: str | None) -> Iterator[ModuleType]:
    """Ray, connected to the cluster at `address` ("auto", "host:port") or, without one (and
    no $RAY_ADDRESS), a local cluster of this machine; disconnects if it connected."""
    ray = require_ray()
    started = not ray.is_initialized()
    if started:
        # The workers see the driver's prodcat settings (cache folder, threads...).
        env = {k: v for k, v in os.environ.items() if k.startswith("PRODCAT_")}
        options: dict[str, Any] = {
            "logging_level": logging.WARNING,
            "log_to_driver": False,
            "runtime_env": {"env_vars": env} if env else None,
        }
        if address is None and not os.environ.get("RAY_ADDRESS"):
            # "local": a new cluster of this machine, never one a `ray start` left running.
            address = "local"
            options["include_dashboard"] = False
        _token_auth_like_a_head()
        try:
            ray.init(address=address, **options)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise RayEngineError(f"--ray-address {address}: cannot connect to Ray: {exc}") from None
    _quiet_data(ray)
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def _token_auth_like_a_head() -> None:
    """Use the user's Ray token (~/.ray/auth_token) when there is one, as `ray start --head`
    does by itself; a driver joining a cluster does not (Ray 2.60) and is refused."""
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # another Ray version: its own defaults
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def _quiet_data(ray: ModuleType) -> None:
    """Rows keep their input order; prodcat draws its own progress bar, so Ray Data's are off
    (and so is the warning that says they are)."""
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    context.print_on_execution_start = False


@dataclass(frozen=True)
class WorkerPlan:
    """How many actors, and the CPUs (= ONNX Runtime threads) of each."""

    workers: int
    cpus: int


def plan_workers(ray: ModuleType, workers: int | None) -> WorkerPlan:
    """`workers` actors (default: one per CPU of the cluster), sharing the CPUs evenly."""
    total = int(ray.cluster_resources().get("CPU", 0))
    if total < 1:
        raise RayEngineError("the Ray cluster has no CPUs; expected at least one")
    count = workers if workers is not None else total
    if count < 1 or count > total:
        raise RayEngineError(
            f"--workers {count}: the Ray cluster has {total} CPUs; expected 1 to {total} workers"
        )
    return WorkerPlan(count, max(1, total // count))


@contextmanager
def worker_errors() -> Iterator[None]:
    """A worker's exception as one RayEngineError line (the original exception's type and
    message where Ray keeps it, else the last line of Ray's report) instead of Ray's nested
    tracebacks."""
    try:
        yield
    except Exception as exc:
        if not type(exc).__module__.startswith("ray."):
            raise
        raise RayEngineError(f"a Ray worker failed: {_first_cause(exc)}") from None


def _first_cause(exc: BaseException) -> str:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = getattr(current, "cause", None) or current.__cause__
    for error in chain:
        if not type(error).__module__.startswith("ray."):
            return f"{type(error).__name__}: {error}"
    for error in chain:
        lines = [line for line in str(error).splitlines() if line.strip()]
        if lines:
            return lines[-1].strip()
    return type(exc).__name__
