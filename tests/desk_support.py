"""Helpers for the review-desk tests: a real server process, a real PostgreSQL, logged-in
HTTP clients. Nothing here is mocked: the server is `prodcat review` in its own process."""

from __future__ import annotations

import os
import re
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

import httpx


def _pg_bin() -> Path:
    """Debian's newest installed PostgreSQL server binaries."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: float(p.parts[-3])
    )
    return found[-1].parent if found else Path("/usr/lib/postgresql/15/bin")


PG_BIN = _pg_bin()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(url: str, proc: subprocess.Popen[bytes] | None = None, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode} before answering {url}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {seconds}s")


class DeskServer:
    """`python -m prodcat.cli review --db URL --port P`, started, killed and restarted."""

    def __init__(self, db_url: str, log: Path) -> None:
        self.db_url, self.log = db_url, log
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> DeskServer:
        cmd = [sys.executable, "-m", "prodcat.cli", "review", "--db", self.db_url]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port)]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        wait_for(self.url + "/login", self.proc)
        return self

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    match = CSRF_RE.search(html)
    assert match, "no CSRF token in the page"
    return match.group(1)


class Reviewer:
    """A logged-in HTTP session against the real server."""

    def __init__(self, base_url: str, name: str, password: str) -> None:
        self.name = name
        self.client = httpx.Client(base_url=base_url, follow_redirects=False, timeout=30)
        page = self.client.get("/login")
        r = self.client.post(
            "/login",
            data={"name": name, "password": password, "csrf_token": csrf_of(page.text)},
        )
        assert r.status_code == 303, f"login of {name} failed: {r.status_code} {r.text[:200]}"
        self.csrf = csrf_of(self.client.get("/desk").text)

    def post(self, path: str, json: object | None = None) -> httpx.Response:
        return self.client.post(path, json=json or {}, headers={"X-CSRF-Token": self.csrf})

    def next(self) -> dict | None:
        r = self.client.get("/api/next")
        assert r.status_code == 200, r.text
        return r.json()["task"]

    def answer(self, product_id: str, category: str) -> httpx.Response:
        return self.post("/api/answer", {"product_id": product_id, "category": category})

    def close(self) -> None:
        self.client.close()


def lenient_copy(model_dir: Path, out: Path, threshold: float) -> Path:
    """A copy of a saved model whose gate accepts at `threshold` in every modality case while
    still promising its target: a model that accepts a lot, too much (what audits must catch)."""
    from prodcat.gate.gate import Gate

    shutil.copytree(model_dir, out)
    gate = Gate.load(out / "gate")
    gate.accept_thresholds = {case: threshold for case in gate.accept_thresholds}
    gate.class_thresholds = {}  # no class kept to a threshold of its own either
    gate.save(out / "gate")
    return out


def answer_all(db, answers: dict[str, str], reviewer: str = "alice") -> None:
    """Record `answers` ({product id: category}) as one reviewer's desk answers, in one
    transaction (what `prodcat.desk.review.answer` stores, without a commit per answer)."""
    from prodcat.desk.db import QueueItem, ReviewAnswer, utcnow

    with db.session() as s, s.begin():
        for pid, category in answers.items():
            item = s.get(QueueItem, pid)
            assert item is not None and item.queued, pid
            s.add(
                ReviewAnswer(
                    product_id=pid,
                    reviewer=reviewer,
                    category=category,
                    new_category=False,
                    model_suggestion=item.category,
                    agreed=category == item.category,
                    source="desk",
                    created_at=utcnow(),
                )
            )


def postgres_available() -> str | None:
    """None when a PostgreSQL server can be started here, else why not."""
    if not (PG_BIN / "initdb").exists():
        return f"PostgreSQL server binaries not found in {PG_BIN} (apt-get install postgresql)"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser: initdb refuses to run as root"
    return None


@contextmanager
def postgres_server() -> Iterator[str]:
    """A throw-away PostgreSQL cluster on a random loopback port; yields the admin URL."""
    folder = Path(tempfile.mkdtemp(prefix="prodcat-pg-"))
    data, port = folder / "data", free_port()
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb and postgres refuse root: run them as the postgres user
        shutil.chown(folder, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    run = dict(check=True, capture_output=True, timeout=120)
    initdb = [*as_user, str(PG_BIN / "initdb"), "-D", str(data), "-U", "desk", "--auth=trust"]
    subprocess.run(initdb, **run)
    proc = subprocess.Popen(
        [
            *as_user,
            str(PG_BIN / "postgres"),
            "-D",
            str(data),
            "-p",
            str(port),
            "-h",
            "127.0.0.1",
            "-k",
            str(folder),
            "-c",
            "fsync=on",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(folder / "server.log").open("wb"),
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ready = subprocess.run(
                [str(PG_BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)],
                capture_output=True,
            )
            if ready.returncode == 0:
                break
            time.sleep(0.3)
        else:
            raise TimeoutError((folder / "server.log").read_text())
        yield f"postgresql://desk@127.0.0.1:{port}/postgres"
    finally:
        stop = [*as_user, str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"]
        subprocess.run(stop, capture_output=True, timeout=60)
        proc.wait(30)
        shutil.rmtree(folder, ignore_errors=True)


def create_database(admin_url: str, name: str) -> str:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin_url.rsplit("/", 1)[0] + "/" + name
