"""A Ray cluster of several nodes on this machine (loopback), for the tests and the benchmark.

`ray start --head` and `ray start --address` as on a real cluster, each node with its own CPUs, a
small object store and no dashboard, all under one temporary folder; stopping ends exactly the
processes whose command line names that folder (never `ray stop`, which would end every Ray
process of the user, other runs' included).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Unix sockets live under the temporary folder and their paths may not exceed 107 bytes; Ray's
# session folder and socket names add ~65 and our folder 13, so a root longer than this falls
# back to the system temp folder (pytest's own temp folders are often longer).
MAX_TEMP_CHARS = 24
START_TIMEOUT_S = 120


def ray_executable() -> str:
    """The `ray` command beside this Python (the one with prodcat[ray] installed)."""
    beside = Path(sys.executable).parent / "ray"
    return str(beside) if beside.is_file() else "ray"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def local_cluster(
    temp_root: Path,
    *,
    nodes: int = 2,
    cpus_per_node: int = 1,
    object_store_mb: int = 100,
) -> Iterator[str]:
    """Yield the address ("127.0.0.1:port") of a head and `nodes - 1` more nodes; stop them all
    at the end, also on failure."""
    folder = Path(tempfile.mkdtemp(prefix="ray-", dir=_short_root(temp_root)))
    port = free_port()
    address = f"127.0.0.1:{port}"
    common = [
        "--node-ip-address=127.0.0.1",
        f"--num-cpus={cpus_per_node}",
        f"--object-store-memory={object_store_mb * 2**20}",
        "--disable-usage-stats",
    ]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    if (Path.home() / ".ray" / "auth_token").is_file() and "RAY_AUTH_MODE" not in env:
        # The head turns token authentication on by itself when the user has a token; a node
        # joining it does not (Ray 2.60), and is then refused: tell both.
        env["RAY_AUTH_MODE"] = "token"
    ray = ray_executable()
    head = [ray, "start", "--head", f"--port={port}", "--include-dashboard=false", *common]
    try:
        _run([*head, f"--temp-dir={folder}"], env)
        for _ in range(nodes - 1):
            _run([ray, "start", f"--address={address}", f"--temp-dir={folder}", *common], env)
        yield address
    finally:
        stop_processes(str(folder))
        shutil.rmtree(folder, ignore_errors=True)


def _short_root(temp_root: Path) -> Path:
    temp_root.mkdir(parents=True, exist_ok=True)
    return temp_root if len(str(temp_root)) <= MAX_TEMP_CHARS else Path(tempfile.gettempdir())


def _run(command: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=START_TIMEOUT_S, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:3])} failed:\n{done.stdout}\n{done.stderr}")


def stop_processes(marker: str, grace_s: float = 5.0) -> list[int]:
    """SIGTERM, then SIGKILL, every process of this user whose command line contains `marker`
    (the cluster's temporary folder) and their descendants (Ray's agents and workers rename
    themselves, "ray::IDLE"); returns their ids."""
    pids = _pids_with(marker)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                continue
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and _alive(pids):
            time.sleep(0.2)
        if not _alive(pids):
            break
    return pids


def _pids_with(marker: str) -> list[int]:
    """The processes naming `marker`, then their descendants, parents first."""
    parents: dict[int, int] = {}
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if entry.stat().st_uid != os.getuid():
                continue
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        if marker.encode() in command:
            found.append(int(entry.name))
    for pid in found:  # grows while it is walked: breadth first over the tree
        found += [
            child for child, parent in parents.items() if parent == pid and child not in found
        ]
    return found


def _alive(pids: list[int]) -> bool:
    """Whether any of `pids` still runs (a zombie, ended but not yet reaped, does not)."""
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            return True
    return False
