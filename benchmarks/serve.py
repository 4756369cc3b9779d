"""Serving benchmark: a real load generator against `prodcat serve` on loopback, plus batch
prediction from files, on the ONNX path and on the torch path in the same run.

    python benchmarks/serve.py --model MODEL_DIR [--json serve.json] [--quick]

Products are distinct rows of ../shared/datasets/fashion-products (60x80 thumbnails + titles).
Measured (each bounded in count and time):
- cold start: process start to the first answered /v1/predict (median of 3 fresh servers);
- single-product latency with 8 concurrent clients (closed loop: each sends its next request when
  the previous one is answered), p50 / p99 / throughput;
- 50 concurrent clients for 60 s: errors, p50 / p99, throughput;
- the server's peak memory (VmHWM) after the load;
- batch prediction from files (`Predictor.predict_products`, what `prodcat predict` runs),
  products/s, with the ONNX encoders + ONNX head and with the torch encoders + torch head.
The load generator (benchmarks/http_load.py: prebuilt requests on raw keep-alive sockets, cheaper
than an HTTP library) runs on the same cores as the server: its CPU is counted against the
server's figures, as a client on the same machine would be, and is reported per request.

`--latency` (issue 19) measures each target beside its baseline in one run, and nothing else:
- one client, one product at a time, JSON (title + image_base64): p50 / p99, beside the floor,
  the encoders' own time for one product (in a fresh process: the photo and title networks alone
  on an already decoded photo, run as the Predictor runs them, side by side; median), and p50's
  ratio to it;
- head + gate per product after the encoders (`StageTimings.head_ms` of single products, median);
- 8 clients: throughput beside batch prediction's, and p99 / p50; beside them, the same products
  answered 4 at a time by two threads in one process (8 in flight, as 8 closed-loop clients allow
  at most, without HTTP), and 50 clients (enough in flight to fill every batch);
- batch prediction from files beside the encoders' own rate on the same products.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from http_load import Connection, closed_loop, json_request, multipart_request

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "fashion-products"


def products(n: int, offset: int = 0) -> list[dict[str, Any]]:
    rows = []
    with (DATA / "products.csv").open(encoding="utf-8") as handle:
        for i, row in enumerate(csv.DictReader(handle)):
            if i < offset:
                continue
            path = DATA / row["image"]
            if path.is_file():
                rows.append({"id": row["id"], "title": row["title"], "photo": path.read_bytes()})
            if len(rows) == n:
                break
    return rows


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    model: Path, workers: int = 1, *, launcher: str = "prodcat"
) -> tuple[subprocess.Popen[bytes], str]:
    """`prodcat serve` (launcher "prodcat"), or `prodcat-serve` ("light"), which skips importing
    the rest of the prodcat command (training, reports)."""
    port = free_port()
    if launcher == "prodcat":
        command = [sys.executable, "-m", "prodcat.cli", "serve", str(model), "--port", str(port)]
        command += ["--workers", str(workers), "--log-level", "warning"]
    else:  # prodcat-serve: the same command without importing the rest of prodcat
        command = [sys.executable, "-c", "from prodcat.serving.command import main; main()"]
        command += [str(model), "--port", str(port), "--workers", str(workers)]
        command += ["--log-level", "warning"]
    process = subprocess.Popen(
        command,
        env={**os.environ, "PRODCAT_MODEL_DIR": str(model.resolve())},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return process, f"http://127.0.0.1:{port}"


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()


def cold_start(model: Path, product: dict[str, Any], launcher: str = "prodcat") -> float:
    """Seconds from process start to the first answered prediction."""
    started = time.perf_counter()
    process, url = start_server(model, launcher=launcher)
    try:
        while True:
            try:
                r = httpx.post(
                    f"{url}/v1/predict",
                    data={"title": product["title"]},
                    files={"image": ("p.jpg", product["photo"])},
                    timeout=30,
                )
                if r.status_code == 200:
                    return time.perf_counter() - started
            except httpx.TransportError:
                time.sleep(0.02)
            if time.perf_counter() - started > 120:
                raise RuntimeError("the server did not answer within 120 s")
    finally:
        stop(process)


async def load(
    url: str, rows: list[dict[str, Any]], clients: int, *, seconds: float, max_requests: int
) -> dict[str, Any]:
    """`clients` closed-loop clients sending single products (multipart: title + photo file)
    until time or count runs out (benchmarks/http_load.py: prebuilt requests, raw sockets)."""
    host = urlsplit(url).netloc
    requests = [
        multipart_request(host, {"title": r["title"], "id": r["id"]}, r["photo"]) for r in rows
    ]
    return await closed_loop(url, requests, clients, seconds=seconds, max_requests=max_requests)


def load_counting_cpu(
    process: subprocess.Popen[bytes],
    url: str,
    rows: list[dict[str, Any]],
    seconds: float,
    max_requests: int,
    clients: int = 8,
) -> dict[str, Any]:
    """`clients` clients' `load`, with the server's CPU per request (ms) beside it."""
    before = cpu_seconds(process.pid)
    result = asyncio.run(load(url, rows, clients, seconds=seconds, max_requests=max_requests))
    used = cpu_seconds(process.pid) - before
    result["server_cpu_ms_per_request"] = round(1000 * used / result["requests"], 2)
    return result


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used (load-independent cost of the work)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_memory_mb(pid: int) -> float:
    """VmHWM of a process and its children (uvicorn workers), in MB."""
    total = 0.0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for p in pids:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1]) / 1024
    return round(total, 1)


def batch_from_files(model_dir: Path, n: int, backend: str) -> dict[str, Any]:
    """products/s of `Predictor.predict_products` on `n` catalogue rows, in a fresh process."""
    code = f"""
import json, sys, time
from prodcat.catalogue import load_catalogue, ColumnMapping
from prodcat.model.predictor import Predictor
from prodcat.model.bundle import Model
cat = load_catalogue({str(DATA / "products.csv")!r}, ColumnMapping(label_column=None),
                     verify_images=False)
products = cat.products[:{n}]
t0 = time.perf_counter()
model = Model.load({str(model_dir)!r}, runtime={"onnx" if backend == "onnx" else "torch"!r})
predictor = Predictor(model, backend={backend!r})
predictor.warm_up()
t1, c1 = time.perf_counter(), time.process_time()
answers = predictor.predict_products(products)
t2, c2 = time.perf_counter(), time.process_time()
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(json.dumps({{"products": len(answers), "load_s": t1 - t0, "seconds": t2 - t1,
                  "cpu_seconds": c2 - c1,
                  "errors": sum(a.error is not None for a in answers),
                  "torch_imported": "torch" in sys.modules, "peak_mb": int(hwm) / 1024}}))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    result["products_per_s"] = round(result["products"] / result["seconds"], 1)
    result["products_per_cpu_s"] = round(result["products"] / result["cpu_seconds"], 1)
    return result


async def single_client(url: str, rows: list[dict[str, Any]], n: int) -> dict[str, Any]:
    """One client, one JSON product at a time (photo in base64 + title), `n` requests."""
    import base64

    host = urlsplit(url).netloc
    requests = [
        json_request(
            host,
            {
                "id": r["id"],
                "title": r["title"],
                "image_base64": base64.b64encode(r["photo"]).decode(),
            },
        )
        for r in rows
    ]
    connection = await Connection.open(url)
    latencies, head_ms, errors = [], [], 0
    cpu0 = time.process_time()
    for i in range(n):
        t0 = time.perf_counter()
        status, body = await connection.send(requests[i % len(requests)])
        latencies.append(time.perf_counter() - t0)
        if status != 200:
            errors += 1
        else:
            head_ms.append(json.loads(body)["timings"]["head_ms"])
    cpu = time.process_time() - cpu0
    connection.close()
    ordered = sorted(latencies)
    return {
        "requests": n,
        "errors": errors,
        "p50_ms": round(1000 * ordered[len(ordered) // 2], 2),
        "p99_ms": round(1000 * ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2),
        "server_head_ms_median": round(statistics.median(head_ms), 3) if head_ms else None,
        "client_cpu_ms_per_request": round(1000 * cpu / n, 3),
    }


def in_process_figures(model_dir: Path, n: int) -> dict[str, Any]:
    """In a fresh process: the encoders' own time for one product (the floor), head + gate per
    single product, and the encoders' own rate in batches of 64 (decoded photos), medians. The
    encoders run as the Predictor runs them (`Predictor.networks`: one call per core)."""
    code = f"""
import json, statistics, time
import numpy as np
from pathlib import Path
from prodcat.catalogue import load_catalogue, ColumnMapping
from prodcat.catalogue.images import load_image
from prodcat.model.bundle import Model
from prodcat.model.predictor import Predictor, ProductInput
cat = load_catalogue({str(DATA / "products.csv")!r}, ColumnMapping(label_column=None),
                     verify_images=False)
products = cat.products[:{n}]
predictor = Predictor(Model.load({str(model_dir)!r}))
predictor.warm_up()
image, networks = predictor.image_encoder, predictor.networks
pixels = [image.preprocess(load_image(p.image, draft_size=image.draft_size)) for p in products]
titles = [p.text for p in products]
one, head = [], []
for px, title, p in zip(pixels[:300], titles, products):
    t0 = time.perf_counter()
    networks.encode(px[None], [title])
    one.append((time.perf_counter() - t0) * 1000)
    prepared = predictor.prepare([ProductInput(p.id, p.text, p.image)])
    head.append(predictor.run(prepared)[1].head_ms)
t0 = time.perf_counter()
for start in range(0, len(pixels), 64):
    networks.encode(np.stack(pixels[start:start + 64]), titles[start:start + 64])
rate = len(pixels) / (time.perf_counter() - t0)
print(json.dumps({{"encoders_one_product_ms": statistics.median(one),
                  "head_gate_ms": statistics.median(head),
                  "head_gate_ms_p99": sorted(head)[int(len(head) * 0.99)],
                  "encoders_products_per_s": rate, "products": len(pixels)}}))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    return {k: round(v, 3) for k, v in json.loads(out.strip().splitlines()[-1]).items()}


def fours_in_process(model_dir: Path, n: int) -> dict[str, Any]:
    """What 8 closed-loop clients allow at best, without HTTP: in a fresh process, two threads
    (the API's one batch per core) each answer products 4 at a time (8 in flight, shared by two
    batches), photo bytes decoded as the API does; products/s."""
    code = f"""
import json, threading, time
from prodcat.catalogue import load_catalogue, ColumnMapping
from prodcat.model.bundle import Model
from prodcat.model.predictor import Predictor, ProductInput
cat = load_catalogue({str(DATA / "products.csv")!r}, ColumnMapping(label_column=None),
                     verify_images=False)
items = [ProductInput(p.id, p.text, p.image.read_bytes()) for p in cat.products[:{n}]]
predictor = Predictor(Model.load({str(model_dir)!r}))
predictor.warm_up()
fours = [items[i:i + 4] for i in range(0, len(items), 4)]
def work(mine):
    for four in mine:
        predictor.run(predictor.prepare(four))
t0, c0 = time.perf_counter(), time.process_time()
threads = [threading.Thread(target=work, args=(fours[k::2],)) for k in range(2)]
for t in threads:
    t.start()
for t in threads:
    t.join()
seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
print(json.dumps({{"products_per_s": len(items) / seconds,
                  "cpu_ms_per_product": 1000 * cpu / len(items)}}))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    return {k: round(v, 2) for k, v in json.loads(out.strip().splitlines()[-1]).items()}


def latency_run(args: argparse.Namespace) -> dict[str, Any]:
    """Issue 19's figures, each beside its baseline (see the module docstring)."""
    rows = products(1000, offset=5000)
    report: dict[str, Any] = {"load_average_before": os.getloadavg()}
    n = args.batch_products
    report["in_process"] = [in_process_figures(args.model, n) for _ in range(args.repeats)]
    print("in process", report["in_process"], flush=True)
    process, url = start_server(args.model)
    try:
        wait_healthy(url)
        asyncio.run(single_client(url, rows[:50], 50))  # warm the sessions
        report["single"] = [asyncio.run(single_client(url, rows, 300)) for _ in range(args.repeats)]
        print("one client", report["single"], flush=True)
        report["clients_8"] = []
        for _ in range(args.repeats):
            report["clients_8"].append(load_counting_cpu(process, url, rows, 20, 800))
        print("8 clients", report["clients_8"], flush=True)
        # With enough requests in flight to fill every batch: what the server itself can do.
        report["clients_50"] = [
            load_counting_cpu(process, url, rows, 20, 1500, clients=50) for _ in range(args.repeats)
        ]
        print("50 clients", report["clients_50"], flush=True)
    finally:
        stop(process)
    report["batch_onnx"] = [batch_from_files(args.model, n, "onnx") for _ in range(args.repeats)]
    print("batch", report["batch_onnx"], flush=True)
    report["fours"] = [fours_in_process(args.model, n) for _ in range(args.repeats)]
    print("fours in process", report["fours"], flush=True)
    report["load_average_after"] = os.getloadavg()

    def median(values: Any) -> float:
        return float(statistics.median(values))

    floor = median(r["encoders_one_product_ms"] for r in report["in_process"])
    p50 = median(r["p50_ms"] for r in report["single"])
    batch_rate = median(r["products_per_s"] for r in report["batch_onnx"])
    encoders_rate = median(r["encoders_products_per_s"] for r in report["in_process"])
    c8_rate = median(r["requests_per_s"] for r in report["clients_8"])
    report["summary"] = {
        "single_p50_ms": p50,
        "single_p99_ms": median(r["p99_ms"] for r in report["single"]),
        "floor_encoders_one_product_ms": round(floor, 2),
        "p50_over_floor": round(p50 / floor, 2),
        "head_gate_ms": median(r["head_gate_ms"] for r in report["in_process"]),
        "server_head_ms": median(r["server_head_ms_median"] for r in report["single"]),
        "clients_8_requests_per_s": c8_rate,
        "batch_products_per_s": batch_rate,
        "clients_8_over_batch": round(c8_rate / batch_rate, 3),
        "clients_50_over_batch": round(
            median(r["requests_per_s"] for r in report["clients_50"]) / batch_rate, 3
        ),
        # The bound 8 clients set without HTTP (two batches of 4 in flight, in process).
        "fours_products_per_s": median(r["products_per_s"] for r in report["fours"]),
        "fours_over_batch": round(
            median(r["products_per_s"] for r in report["fours"]) / batch_rate, 3
        ),
        "clients_8_over_fours": round(
            c8_rate / median(r["products_per_s"] for r in report["fours"]), 3
        ),
        "clients_8_p99_over_p50": round(
            median(r["p99_ms"] / r["p50_ms"] for r in report["clients_8"]), 2
        ),
        "encoders_products_per_s": round(encoders_rate, 1),
        "batch_over_encoders": round(batch_rate / encoders_rate, 3),
        "clients_8_client_cpu_ms_per_request": median(
            r["client_cpu_ms_per_request"] for r in report["clients_8"]
        ),
        "clients_8_server_cpu_ms_per_request": median(
            r["server_cpu_ms_per_request"] for r in report["clients_8"]
        ),
        "batch_cpu_ms_per_product": round(
            median(1000 / r["products_per_cpu_s"] for r in report["batch_onnx"]), 2
        ),
    }
    return report


def wait_healthy(url: str) -> None:
    started = time.perf_counter()
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
        if time.perf_counter() - started > 300:
            raise RuntimeError("the server did not become healthy within 300 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--quick", action="store_true", help="short runs (smoke test)")
    parser.add_argument("--batch-products", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cold-start-only", action="store_true")
    parser.add_argument("--latency", action="store_true", help="issue 19's figures only")
    args = parser.parse_args()
    if args.latency:
        report = latency_run(args)
        report["date"] = time.strftime("%Y-%m-%d %H:%M")
        report["machine"] = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
        print(json.dumps(report["summary"], indent=2))
        if args.json:
            args.json.write_text(json.dumps(report, indent=2))
        return
    quick = args.quick
    rows = products(400 if quick else 4000, offset=5000)
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "load_average_before": os.getloadavg(),
    }
    report["cold_start_s"] = [round(cold_start(args.model, rows[i]), 2) for i in range(3)]
    report["cold_start_light_s"] = [
        round(cold_start(args.model, rows[i], "light"), 2) for i in range(3)
    ]
    print("cold start", report["cold_start_s"], report["cold_start_light_s"], flush=True)
    if args.cold_start_only:
        return

    process, url = start_server(args.model)
    try:
        wait_healthy(url)
        asyncio.run(load(url, rows[:50], 2, seconds=5, max_requests=50))  # warm the sessions
        report["clients_8"] = []
        for _ in range(1 if quick else args.repeats):
            requests = 300 if quick else 1500
            report["clients_8"].append(load_counting_cpu(process, url, rows, 30, requests))
        print("8 clients", report["clients_8"], flush=True)
        report["clients_50"] = asyncio.run(
            load(url, rows, 50, seconds=10 if quick else 60, max_requests=10**6)
        )
        print("50 clients", report["clients_50"], flush=True)
        report["server_peak_memory_mb"] = peak_memory_mb(process.pid)
        metrics = httpx.get(f"{url}/metrics").text
        report["server_5xx"] = 'status="5' in metrics
    finally:
        stop(process)

    n = 300 if quick else args.batch_products
    report["batch_onnx"] = [batch_from_files(args.model, n, "onnx") for _ in range(args.repeats)]
    print("batch onnx", report["batch_onnx"], flush=True)
    report["batch_torch"] = [batch_from_files(args.model, n // 3, "torch")]
    print("batch torch", report["batch_torch"], flush=True)
    report["load_average_after"] = os.getloadavg()
    summary = {
        "cold_start_s_median": statistics.median(report["cold_start_s"]),
        "cold_start_light_s_median": statistics.median(report["cold_start_light_s"]),
        "p50_ms_8_clients_median": statistics.median(r["p50_ms"] for r in report["clients_8"]),
        "p99_ms_8_clients_median": statistics.median(r["p99_ms"] for r in report["clients_8"]),
        "server_cpu_ms_per_request_median": statistics.median(
            r["server_cpu_ms_per_request"] for r in report["clients_8"]
        ),
        "errors_50_clients": report["clients_50"]["errors"],
        "batch_onnx_products_per_s_median": statistics.median(
            r["products_per_s"] for r in report["batch_onnx"]
        ),
        "batch_onnx_products_per_cpu_s_median": statistics.median(
            r["products_per_cpu_s"] for r in report["batch_onnx"]
        ),
        "batch_torch_products_per_s": report["batch_torch"][0]["products_per_s"],
        "batch_torch_products_per_cpu_s": report["batch_torch"][0]["products_per_cpu_s"],
    }
    report["summary"] = summary
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
