"""Review-desk latency over real HTTP: one answer (POST /api/answer, committed) plus the next
product (GET /api/next), as a reviewer's browser does them, against a `prodcat review` server.

Queues the bundled sample with MODEL_DIR into a fresh database, starts the server in its own
process, then times `--answers` answer+next round trips per reviewer, with 1 and with 4 reviewers
at once; medians over --repeats runs (each on a fresh database).

    python benchmarks/desk.py MODEL_DIR [--db postgresql://...] [--answers 30] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from prodcat.catalogue import load_catalogue
from prodcat.cli.demo import sample_catalogue
from prodcat.desk.auth import add_user
from prodcat.desk.db import Database
from prodcat.desk.queue import build_queue
from prodcat.features.cache import FeatureCache
from prodcat.model.bundle import Model

PASSWORD = "benchmark password"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _login(url: str, name: str) -> tuple[httpx.Client, str]:
    client = httpx.Client(base_url=url, timeout=60)
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text)
    assert token
    client.post("/login", data={"name": name, "password": PASSWORD, "csrf_token": token[1]})
    page = client.get("/desk").text
    csrf = re.search(r'data-csrf="([^"]+)"', page)
    assert csrf, "login failed"
    return client, csrf[1]


def _review(url: str, name: str, n: int, times: list[float]) -> None:
    client, csrf = _login(url, name)
    task = client.get("/api/next").json()["task"]
    for _ in range(n):
        start = time.perf_counter()
        body = {"product_id": task["product_id"], "category": task["top"][0]["category"]}
        r = client.post("/api/answer", json=body, headers={"X-CSRF-Token": csrf})
        r.raise_for_status()
        task = client.get("/api/next").json()["task"]
        times.append(time.perf_counter() - start)
        if task is None:
            break


def run_once(db_url: str, model: Model, model_dir: Path, reviewers: int, answers: int) -> float:
    db = Database(db_url)
    build_queue(db, model, load_catalogue(sample_catalogue()), cache=FeatureCache())
    for i in range(reviewers):
        add_user(db, f"r{i}", PASSWORD)
    port = _port()
    cmd = [sys.executable, "-m", "prodcat.cli", "review", "--db", db_url, "--port", str(port)]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                httpx.get(url + "/login")
                break
            except httpx.TransportError:
                time.sleep(0.2)
        times: list[float] = []
        threads = [
            threading.Thread(target=_review, args=(url, f"r{i}", answers, times))
            for i in range(reviewers)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return statistics.median(times)
    finally:
        server.terminate()
        server.wait(30)
        db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--db", help="a postgresql:// server URL (its tables are replaced)")
    parser.add_argument("--answers", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    model = Model.load(args.model_dir)
    print(
        f"machine: {platform.platform()}, {os.cpu_count()} CPUs; python {platform.python_version()}"
    )
    for reviewers in (1, 4):
        medians = []
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as folder:
                url = args.db or f"sqlite:///{Path(folder) / 'desk.db'}"
                if args.db:
                    _reset_postgres(url)
                medians.append(run_once(url, model, args.model_dir, reviewers, args.answers))
        backend = "postgresql" if args.db else "sqlite"
        runs = ", ".join(f"{m * 1000:.1f}" for m in medians)
        print(
            f"{backend}, {reviewers} reviewer(s) at once: answer + next product "
            f"median {statistics.median(medians) * 1000:.1f} ms (runs: {runs} ms)"
        )


def _reset_postgres(url: str) -> None:
    from sqlalchemy import create_engine, text

    from prodcat.desk.db import normalise_url

    engine = create_engine(normalise_url(url))
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()


if __name__ == "__main__":
    main()
