"""The base install (`pip install prodcat`: no torch, no weight packages): its size on disk, and the
cold start of `prodcat serve` from it, against the full install running this script, in one run.

    python benchmarks/install.py MODEL_DIR [--runs 5] [--base-venv DIR] [--json install.json]

MODEL_DIR is a model folder from `prodcat train` (it carries its encoders). Measured:
- size: a fresh venv (`python3 -m venv`, pip included) with the base alone
  (`pip install --no-compile -c constraints.txt .`), `du` of the whole venv (hard links counted
  once): as installed, and with every module compiled to bytecode as a plain `pip install` does
  (the servers below then run from it); the largest packages. --base-venv DIR reuses a venv made
  so, compiled (no install, no size).
- cold start: `prodcat serve MODEL_DIR` from process start to the first 200 from /healthz (the
  model loaded and its ONNX sessions warmed up) and to the first answered /v1/predict (a sample
  photo and title); the CPU seconds the server used until then (/proc/PID/stat), which other jobs
  on the machine inflate less than the wall time. Base and full servers alternate, one unmeasured
  start of each first (it fills the page cache); medians of --runs.
Both servers run this checkout's code (PYTHONPATH=src), so only the installed packages differ.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "src" / "prodcat" / "data" / "sample"


def disk_mb(folder: Path) -> float:
    """`du`: megabytes `folder` takes on disk (hard links counted once)."""
    done = subprocess.run(["du", "-sk", str(folder)], capture_output=True, text=True, check=True)
    return int(done.stdout.split()[0]) / 1024


def site_packages(venv: Path) -> Path:
    return next((venv / "lib").glob("python3*/site-packages"))


def make_base_venv(venv: Path) -> dict[str, Any]:
    """A fresh venv with the base install, without bytecode; its size and largest parts."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    started = time.perf_counter()
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--no-compile", "-c", "constraints.txt", "."],
        cwd=REPO,
        check=True,
    )
    install_s = time.perf_counter() - started
    torch = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import torch"], stderr=subprocess.DEVNULL, check=False
    )
    packages = site_packages(venv)
    parts = sorted(((p.name, disk_mb(p)) for p in packages.iterdir()), key=lambda item: -item[1])
    return {
        "install_s": round(install_s, 1),
        "size_mb_without_bytecode": round(disk_mb(venv), 1),
        "torch_importable": torch.returncode == 0,
        "largest_mb": {name: round(mb, 1) for name, mb in parts[:12]},
    }


def compile_all(venv: Path) -> float:
    """Compile every module to bytecode, as pip does unless --no-compile; the venv's size then."""
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "compileall", "-q", str(site_packages(venv))]
    )
    return round(disk_mb(venv), 1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cold_start(python: Path, model: Path, photo: bytes) -> dict[str, float]:
    """Seconds (and server CPU seconds) from process start to /healthz and to a prediction."""
    port = free_port()
    command = [str(python), "-m", "prodcat.cli", "serve", str(model), "--port", str(port)]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "PRODCAT_CACHE_DIR": tempfile.mkdtemp()}
    url = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    process = subprocess.Popen(
        [*command, "--log-level", "warning"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    out: dict[str, float] = {}
    try:
        with httpx.Client(timeout=30) as client:
            while "health_s" not in out:
                if process.poll() is not None:
                    raise RuntimeError(f"the server exited ({process.returncode}): {command}")
                try:
                    if client.get(f"{url}/healthz").status_code == 200:
                        out["health_s"] = time.perf_counter() - started
                        out["health_cpu_s"] = cpu_seconds(process.pid)
                except httpx.TransportError:
                    time.sleep(0.01)
                if time.perf_counter() - started > 120:
                    raise RuntimeError("the server did not answer within 120 s")
            answer = client.post(
                f"{url}/v1/predict",
                data={"title": "Nike Men Blue Running Shoes"},
                files={"image": ("p.jpg", photo)},
            )
            answer.raise_for_status()
            out["predict_s"] = time.perf_counter() - started
            out["predict_cpu_s"] = cpu_seconds(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=30)
        shutil.rmtree(env["PRODCAT_CACHE_DIR"], ignore_errors=True)
    return out


def medians(runs: list[dict[str, float]]) -> dict[str, Any]:
    return {
        key: {
            "median": round(statistics.median(r[key] for r in runs), 2),
            "runs": [round(r[key], 2) for r in runs],
        }
        for key in runs[0]
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="model folder from prodcat train")
    parser.add_argument("--runs", type=int, default=5, help="cold starts per install (median)")
    parser.add_argument("--base-venv", type=Path, help="reuse this base venv (no install)")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    report: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "load_average_before": os.getloadavg(),
    }
    work = Path(tempfile.mkdtemp(prefix="prodcat-install-"))
    try:
        venv = args.base_venv
        if venv is None:
            venv = work / "base"
            report["base_install"] = make_base_venv(venv)
            # Compiled as a plain `pip install` leaves it: a server that finds no bytecode (and
            # may not write it: PYTHONDONTWRITEBYTECODE) compiles every module at each start.
            report["base_install"]["size_mb_with_bytecode"] = compile_all(venv)
            print("base install", json.dumps(report["base_install"]), flush=True)
        photo = next(iter(sorted((SAMPLE / "images").glob("*.jpg")))).read_bytes()
        pythons = {"base": venv / "bin" / "python", "full": Path(sys.executable)}
        for python in pythons.values():  # unmeasured: fills the page cache
            cold_start(python, args.model, photo)
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in pythons}
        for _ in range(args.runs):
            for name, python in pythons.items():
                runs[name].append(cold_start(python, args.model, photo))
        report["cold_start"] = {name: medians(r) for name, r in runs.items()}
        report["load_average_after"] = os.getloadavg()

    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
