"""Helpers for the Label Studio tests: a desk queued from the bundled sample (predictions made
by hand, so no model is trained) and a real Label Studio server in its own process."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import requests

from desk_support import free_port
from prodcat.catalogue import Catalogue
from prodcat.desk.db import Database
from prodcat.desk.queue import add_to_taxonomy, record_predictions
from prodcat.model.prediction import Prediction

VERSION = "sample@ls"


def queued_desk(url: str, catalogue: Catalogue, n: int = 12) -> Database:
    """A desk with the first `n` sample products queued for review. The model's answer (top-1) is
    the product's own category for even positions and another category for odd ones."""
    db = Database(url)
    products = catalogue.products[:n]
    paths = sorted({" > ".join(p.label) for p in catalogue.products if p.label})
    preds = []
    for i, product in enumerate(products):
        own = " > ".join(product.label)
        others = [c for c in paths if c != own]
        top = (
            ([own, *others[i : i + 4]])
            if i % 2 == 0
            else ([*others[i : i + 1], own, *others[i + 1 : i + 4]])
        )
        probs = [0.5, 0.2, 0.1, 0.1, 0.1]
        preds.append(
            Prediction(
                id=product.id,
                category=top[0],
                probability=probs[0],
                level_probabilities=[],
                top=list(zip(top, probs, strict=True)),
                decision="review",
            )
        )
    record_predictions(db, products, preds, VERSION)
    add_to_taxonomy(db, paths)
    return db


class LabelStudioServer:
    """`label-studio start` on 127.0.0.1 with its data under `folder`, local files served from
    `root`, analytics, Sentry and the version check off; an admin with a known legacy token."""

    def __init__(self, binary: str, folder: Path, root: Path) -> None:
        self.binary, self.folder, self.root = binary, folder, root
        self.port = free_port()
        self.token = secrets.token_hex(20)
        self.email = "admin@example.org"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            # everything Label Studio writes stays in the test's folder, not in ~/.local
            "LABEL_STUDIO_BASE_DATA_DIR": str(self.folder / "data"),
            "XDG_DATA_HOME": str(self.folder / "xdg"),
            "XDG_CACHE_HOME": str(self.folder / "xdg-cache"),
            "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
            "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(self.root),
            "COLLECT_ANALYTICS": "false",
            "LATEST_VERSION_CHECK": "false",
            "SENTRY_DSN": "",
            "FRONTEND_SENTRY_DSN": "",
            "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
        }

    def start(self, seconds: float = 240) -> LabelStudioServer:
        self.folder.mkdir(parents=True, exist_ok=True)
        cmd = [self.binary, "start", "--no-browser", "--internal-host", "127.0.0.1"]
        cmd += ["--port", str(self.port), "--data-dir", str(self.folder / "data")]
        cmd += ["--username", self.email, "--password", secrets.token_hex(12)]
        cmd += ["--user-token", self.token, "--enable-legacy-api-token"]
        with (self.folder / "server.log").open("ab") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env(), cwd=self.folder
            )
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Label Studio exited: {self.log_tail()}")
            try:
                if requests.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(1)
        raise TimeoutError(f"Label Studio did not answer in {seconds}s: {self.log_tail()}")

    def log_tail(self) -> str:
        return (self.folder / "server.log").read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def copy_photos(catalogue: Catalogue, n: int, folder: Path) -> None:
    """The first `n` products' photos copied under `folder` (a local-files root's subfolder)."""
    folder.mkdir(parents=True, exist_ok=True)
    for product in catalogue.products[:n]:
        if product.image:
            shutil.copy(product.image, folder / Path(product.image).name)
