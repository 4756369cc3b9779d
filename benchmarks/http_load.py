"""A light HTTP/1.1 load generator for benchmarks/serve.py: requests built once, raw sockets.

The clients run on the same two cores as the server, so every millisecond of CPU they spend per
request is taken from the server. httpx spends about a millisecond per request building,
parsing and routing; here a request is a prebuilt byte string written to a keep-alive
connection and an answer is a status line, headers and a Content-Length body, nothing more.
Each result also says how much CPU the clients themselves used per request.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any
from urllib.parse import urlsplit

BOUNDARY = "prodcat-benchmark-boundary"


def multipart_request(host: str, fields: dict[str, str], photo: bytes) -> bytes:
    """POST /v1/predict with form fields and the photo as the `image` file."""
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    parts.append(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="p.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n".encode()
        + photo
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    body = b"".join(parts)
    return _request(host, f"multipart/form-data; boundary={BOUNDARY}", body)


def json_request(host: str, document: dict[str, Any]) -> bytes:
    """POST /v1/predict with a JSON body."""
    return _request(host, "application/json", json.dumps(document).encode())


def _request(host: str, content_type: str, body: bytes) -> bytes:
    head = (
        f"POST /v1/predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class Connection:
    """One keep-alive connection; `send` writes a prebuilt request and reads its answer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, url: str) -> Connection:
        parts = urlsplit(url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        return cls(reader, writer)

    async def send(self, request: bytes) -> tuple[int, bytes]:
        self.writer.write(request)
        status = int((await self.reader.readline()).split()[1])
        length = None
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if length is None:
            raise RuntimeError("the answer has no Content-Length (chunked answers are not read)")
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


async def closed_loop(
    url: str, requests: list[bytes], clients: int, *, seconds: float, max_requests: int
) -> dict[str, Any]:
    """`clients` closed-loop clients (each sends its next request when its answer is in)."""
    latencies: list[float] = []
    errors: list[str] = []
    next_index = 0
    deadline = time.perf_counter() + seconds
    connections = [await Connection.open(url) for _ in range(clients)]

    async def worker(connection: Connection) -> None:
        nonlocal next_index
        while time.perf_counter() < deadline and next_index < max_requests:
            request = requests[next_index % len(requests)]
            next_index += 1
            t0 = time.perf_counter()
            status, body = await connection.send(request)
            latencies.append(time.perf_counter() - t0)
            if status != 200:
                errors.append(f"{status} {body[:100]!r}")

    cpu0, started = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker(c) for c in connections))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu0
    for connection in connections:
        connection.close()
    ordered = sorted(latencies)
    return {
        "clients": clients,
        "requests": len(latencies),
        "errors": len(errors),
        "first_errors": errors[:3],
        "seconds": round(elapsed, 2),
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(1000 * ordered[len(ordered) // 2], 2),
        "p99_ms": round(1000 * ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2),
        "client_cpu_ms_per_request": round(1000 * cpu / max(1, len(latencies)), 3),
    }
