"""Hostile input through the real HTTP server (`prodcat serve` under uvicorn on a loopback port).

Every case must get a 4xx (or, in a batch, a per-item error) whose message names what was wrong;
never a 500 and never a hung worker; the server answers /healthz afterwards.
"""

from __future__ import annotations

import base64
import io
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

MAX_REQUEST = 6 * 1024 * 1024
MAX_IMAGE = 4 * 1024 * 1024
MAX_BATCH = 8


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(sample_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`prodcat serve` in a subprocess with small limits; yields its base URL."""
    port = free_port()
    env = {
        **os.environ,
        "PRODCAT_MAX_REQUEST_BYTES": str(MAX_REQUEST),
        "PRODCAT_MAX_IMAGE_BYTES": str(MAX_IMAGE),
        "PRODCAT_MAX_BATCH_ITEMS": str(MAX_BATCH),
        "PRODCAT_MAX_TITLE_CHARS": "500",
    }
    log = tmp_path_factory.mktemp("server") / "server.log"
    with log.open("w") as handle:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "prodcat.cli",
                "serve",
                str(sample_model_dir),
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                pytest.fail(f"the server exited with {process.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the server did not answer /healthz in 120 s:\n{log.read_text()}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
    assert "Traceback" not in log.read_text(), log.read_text()


# -- the corpus ------------------------------------------------------------------------------


def jpeg(size: tuple[int, int] = (60, 80), quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (30, 90, 160)).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass(frozen=True)
class Case:
    name: str
    send: Callable[[httpx.Client], httpx.Response]
    status: int
    says: str  # a phrase the error message must contain ('' for a 200)


def multipart(title: str | None = None, image: bytes | None = None, **extra: Any) -> Callable:
    def send(client: httpx.Client) -> httpx.Response:
        data = {} if title is None else {"title": title}
        files = None if image is None else {"image": ("photo.jpg", image, "image/jpeg")}
        return client.post("/v1/predict", data=data, files=files, **extra)

    return send


def raw(path: str, body: bytes, content_type: str | None) -> Callable:
    headers = {} if content_type is None else {"content-type": content_type}
    return lambda client: client.post(path, content=body, headers=headers)


def as_json(path: str, body: object) -> Callable:
    return lambda client: client.post(path, json=body)


def multipart_bytes(parts: list[tuple[str, str | None, bytes]], boundary: str = "XyZ") -> bytes:
    chunks = []
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        chunks.append(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode())
        chunks.append(data + b"\r\n")
    return b"".join(chunks) + f"--{boundary}--\r\n".encode()


def corpus(sample_photo: bytes) -> list[Case]:
    bomb = png(Image.new("1", (20_000, 20_000)))  # 400 MP of one bit: a few dozen kB
    big_photo = jpeg((7_300, 5_500), quality=60)  # 40 MP
    oversize = sample_photo + os.urandom(MAX_IMAGE)  # a valid JPEG start, over the image limit
    mp = "multipart/form-data; boundary=XyZ"
    ok_body = multipart_bytes([("title", None, b"Blue shirt")])
    batch_item = {"title": "Men Black Watch", "image_base64": b64(sample_photo)}
    return [
        Case("corrupt image", multipart("shoe", os.urandom(3000)), 422, "not an image"),
        Case("truncated JPEG", multipart("shoe", sample_photo[: len(sample_photo) // 2]), 422,
             "truncated"),
        Case("zero-byte image", multipart("shoe", b""), 422, "empty (0 bytes)"),
        Case("text file named .jpg", multipart("shoe", b"hello, I am a text file\n" * 20), 422,
             "not an image"),
        Case("decompression bomb", multipart("shoe", bomb), 422, "decompression bomb"),
        Case("40-megapixel photo", multipart("Blue shirt", big_photo), 200, ""),
        Case("image over the size limit", multipart("shoe", oversize), 413, "the limit is"),
        Case("body over the request limit",
             raw("/v1/predict", b"{" + b" " * (MAX_REQUEST + 10) + b"}", "application/json"),
             413, "over the limit"),
        Case("text/plain body", raw("/v1/predict", b"title=shoe", "text/plain"), 415,
             "not accepted"),
        Case("form-urlencoded body", lambda c: c.post("/v1/predict", data={"title": "shoe"}),
             415, "application/x-www-form-urlencoded"),
        Case("no content type", raw("/v1/predict", b'{"title": "shoe"}', None), 415, "(none)"),
        Case("XML body", raw("/v1/predict", b"<title>shoe</title>", "application/xml"), 415,
             "application/xml"),
        Case("multipart without boundary", raw("/v1/predict", ok_body, "multipart/form-data"),
             400, "no boundary"),
        Case("truncated multipart", raw("/v1/predict", ok_body[:-12], mp), 400,
             "closing boundary"),
        Case("multipart image sent as a text field",
             raw("/v1/predict", multipart_bytes([("image", None, b"abc")]), mp), 422,
             "not a file part"),
        Case("unknown multipart field",
             raw("/v1/predict", multipart_bytes([("titel", None, b"shoe")]), mp), 422,
             "unexpected field"),
        Case("repeated multipart field",
             raw("/v1/predict", multipart_bytes([("title", None, b"a"), ("title", None, b"b")]),
                 mp), 400, "appears twice"),
        Case("invalid base64", as_json("/v1/predict", {"image_base64": "not*base64!"}), 422,
             "not valid base64"),
        Case("base64 of a non-image", as_json("/v1/predict", {"image_base64": b64(b"%PDF-1.4")}),
             422, "not an image"),
        Case("empty JSON object", as_json("/v1/predict", {}), 422, "neither a title nor an image"),
        Case("empty multipart", raw("/v1/predict", b"--XyZ--\r\n", mp), 422,
             "neither a title nor an image"),
        Case("whitespace-only title", as_json("/v1/predict", {"title": " \n\t "}), 422,
             "neither a title nor an image"),
        Case("100,000-character title", as_json("/v1/predict", {"title": "a" * 100_000}), 422,
             "100,000 characters; the limit is 500"),
        Case("non-UTF-8 title (multipart)",
             raw("/v1/predict", multipart_bytes([("title", None, b"caf\xe9 \xff")]), mp), 400,
             "not valid UTF-8"),
        Case("non-UTF-8 JSON body",
             raw("/v1/predict", b'{"title": "caf\xe9"}', "application/json"), 400,
             "Invalid JSON"),
        Case("NUL control character", as_json("/v1/predict", {"title": "shoe\x00name"}), 422,
             "control character U+0000 at position 4"),
        Case("escape control character", as_json("/v1/predict", {"title": "red\x1b[31m"}), 422,
             "U+001B"),
        Case("lone surrogate", raw("/v1/predict", b'{"title": "shoe \\ud800"}',
                                   "application/json"), 400, "hex escape"),
        Case("emoji title", as_json("/v1/predict", {"title": "👟 Running shoes 🏃‍♀️"}), 200, ""),
        Case("right-to-left title", as_json("/v1/predict", {"title": "حذاء رياضي أزرق שמלה"}),
             200, ""),
        Case("JSON array", as_json("/v1/predict", ["shoe"]), 422, "should be an object"),
        Case("title is a number", as_json("/v1/predict", {"title": 42}), 422, "title"),
        Case("unknown JSON field", as_json("/v1/predict", {"title": "a", "colour": "red"}), 422,
             "colour"),
        Case("image_base64 is a list", as_json("/v1/predict", {"image_base64": ["a"]}), 422,
             "image_base64"),
        Case("malformed JSON", raw("/v1/predict", b'{"title": "shoe"', "application/json"), 400,
             "Invalid JSON"),
        Case("batch over the limit",
             as_json("/v1/predict/batch", {"items": [{"title": "x"}] * (MAX_BATCH + 1)}), 413,
             f"the limit is {MAX_BATCH}"),
        Case("batch items not a list", as_json("/v1/predict/batch", {"items": {"title": "x"}}),
             422, "items"),
        Case("batch as multipart",
             lambda c: c.post("/v1/predict/batch", files={"f": ("a", b"b")}), 415,
             "application/json"),
        Case("GET on a POST route", lambda c: c.get("/v1/predict"), 405, "Method Not Allowed"),
        Case("unknown route", lambda c: c.get("/v2/predict"), 404, "Not Found"),
        Case("batch: one item of each kind of trouble", as_json("/v1/predict/batch", {"items": [
            batch_item, {"image_base64": "%%%"}, {"title": "x\x07"}, {},
            {"image_base64": b64(b"GIF89a broken")}, {"title": "Red cotton kurta"}]}), 200, ""),
    ]  # fmt: skip


def test_hostile_corpus(server: str, sample_dir: Path) -> None:
    sample_photo = next(iter(sorted((sample_dir / "images").glob("*.jpg")))).read_bytes()
    cases = corpus(sample_photo)
    assert len(cases) >= 30
    failures = []
    with httpx.Client(base_url=server, timeout=60) as client:
        for case in cases:
            started = time.perf_counter()
            try:
                response = case.send(client)
            except httpx.TransportError as exc:
                failures.append(f"{case.name}: no answer ({exc!r})")
                continue
            elapsed = time.perf_counter() - started
            try:
                body = response.json()
            except ValueError:
                body = response.text
            detail = body.get("detail", "") if isinstance(body, dict) else ""
            if response.status_code != case.status or case.says not in str(detail):
                failures.append(f"{case.name}: {response.status_code} {body!r:.300}")
            if elapsed > 20:
                failures.append(f"{case.name}: took {elapsed:.1f} s")
            if response.status_code == case.status == 200 and "items" not in body:
                assert body["category"].count(" > ") == 2, case.name
        health = client.get("/healthz")
        metrics = client.get("/metrics").text
    assert not failures, "\n".join(failures)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert 'status="500"' not in metrics
    assert 'prodcat_http_errors_total{route="/v1/predict",status="422"}' in metrics


def test_batch_with_bad_items_answers_the_good_ones(server: str, sample_dir: Path) -> None:
    photo = next(iter(sorted((sample_dir / "images").glob("*.jpg")))).read_bytes()
    items = [
        {"id": "ok-photo", "title": "Men Black Watch", "image_base64": b64(photo)},
        {"id": "bad-b64", "image_base64": "%%%"},
        {"id": "ctrl", "title": "x\x07"},
        {"id": "nothing"},
        {"id": "bad-image", "title": "Red kurta", "image_base64": b64(b"GIF89a broken")},
        {"id": "ok-title", "title": "Red cotton kurta"},
    ]
    response = httpx.post(f"{server}/v1/predict/batch", json={"items": items}, timeout=60)
    assert response.status_code == 200
    body = response.json()
    assert (body["n_ok"], body["n_errors"]) == (2, 4)
    out = body["items"]
    assert [o["index"] for o in out] == list(range(6))
    assert out[0]["prediction"]["id"] == "ok-photo"
    assert out[0]["prediction"]["modalities"] == ["image", "text"]
    assert out[5]["prediction"]["modalities"] == ["text"]
    assert out[1]["error"]["field"] == "items[1].image_base64"
    assert "not valid base64" in out[1]["error"]["detail"]
    assert out[2]["error"]["field"] == "items[2].title" and "U+0007" in out[2]["error"]["detail"]
    assert "neither a title nor an image" in out[3]["error"]["detail"]
    assert out[4]["error"]["field"] == "items[4].image_base64"
    assert "not an image Pillow can read" in out[4]["error"]["detail"]
    assert all(out[i]["prediction"] is None for i in (1, 2, 3, 4))


def test_concurrent_clients_with_bad_input_do_not_hang_the_worker(server: str) -> None:
    """Good and bad requests interleaved from 8 threads: all answered, none lost."""
    from concurrent.futures import ThreadPoolExecutor

    def one(i: int) -> int:
        body = {"title": f"Blue denim jeans {i}"} if i % 2 else {"image_base64": "###"}
        return httpx.post(f"{server}/v1/predict", json=body, timeout=60).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(one, range(48)))
    assert statuses.count(200) == 24 and statuses.count(422) == 24
    assert httpx.get(f"{server}/healthz", timeout=10).status_code == 200
