"""`maf serve` under load, on loopback only, with bounded request counts:

- in process: `MAFPredictor.predict(images=...)` on the inputs, in batches of 32 (tweets/s);
- served: `maf serve RUN` in its own process, and CLIENTS threads that each send one tweet
  with its image per request (JSON, base64) until REQUESTS are answered: throughput, and
  p50/p95 latency. served_ratio = served / in process (goal >= 0.7);
- soak: SOAK more requests; the server's resident memory after CHECK of them and after all
  (goal: within 10%);
- failures: requests not answered 200 (goal 0).

The inputs are the run's test tweets with their images (those that are ok), cycled. The
final line is JSON.

    .venv/bin/python benchmarks/serve_load.py [--run demo/runs/maf] [--images demo/data/images]
        [--clients 8] [--requests 400] [--soak 5000] [--check 500]
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))


def inputs(run: Path, images: Path) -> list[tuple[str, bytes]]:
    """(text, image bytes) of the run's test tweets whose image is there and decodes (the sample
    corpus also has broken files, which the server rightly refuses)."""
    from pipeline.images import ImageIndex, decode, read_image_bytes

    rows = [json.loads(x) for x in (run / "predictions" / "test.jsonl").read_text().splitlines() if x.strip()]
    index, found = ImageIndex(images), []
    for row in rows:
        status, data = read_image_bytes(index, str(row["id"]))
        try:
            decode(data) if data else None
        except Exception:  # noqa: BLE001 - any decoding failure: not an input for a load test
            data = None
        if data:
            found.append((" ".join(row["words"]), data))
    if not found:
        raise SystemExit(f"{images}: no image of {run}'s test tweets")
    return found


def in_process(run: Path, data: list[tuple[str, bytes]], count: int, batch: int = 32) -> float:
    """Tweets per second of MAFPredictor.predict(images=...) over `count` inputs."""
    from maf_core.predict import MAFPredictor

    predictor = MAFPredictor.from_pretrained(run)
    chosen = [data[n % len(data)] for n in range(count)]
    predictor.predict([{"id": "warm", "text": chosen[0][0]}], images={"warm": chosen[0][1]})  # backbone built
    started = time.perf_counter()
    for first in range(0, count, batch):
        part = chosen[first:first + batch]
        ids = [f"t{first + n}" for n in range(len(part))]
        predictor.predict([{"id": i, "text": text} for i, (text, _) in zip(ids, part)],
                          images={i: image for i, (_, image) in zip(ids, part)}, batch_size=batch)
    return count / (time.perf_counter() - started)


def start_server(run: Path, images: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-m", "cli.maf", "serve", str(run), "--images", str(images),
                                "--host", "127.0.0.1", "--port", str(port)], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    import httpx

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"maf serve stopped: {process.stderr.read()[-2000:]}")
        try:
            if httpx.get(url + "/api/health", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.5)
    process.kill()
    raise SystemExit("maf serve did not answer within 300 s")


def load(url: str, data: list[tuple[str, bytes]], clients: int, requests: int) -> dict:
    """CLIENTS threads share REQUESTS requests of one tweet and its image each."""
    import httpx

    bodies = [json.dumps({"items": [{"text": t, "image": base64.b64encode(i).decode()}]}) for t, i in data]
    lock, taken, latencies, failures = threading.Lock(), [0], [], []

    def client() -> None:
        with httpx.Client(timeout=120) as http:
            while True:
                with lock:
                    if taken[0] >= requests:
                        return
                    n = taken[0]
                    taken[0] += 1
                started = time.perf_counter()
                try:
                    answer = http.post(url + "/api/predict", content=bodies[n % len(bodies)],
                                       headers={"content-type": "application/json"})
                    failed = None if answer.status_code == 200 else str(answer.status_code)
                except httpx.HTTPError as err:
                    failed = type(err).__name__
                with lock:
                    if failed is None:
                        latencies.append(time.perf_counter() - started)
                    else:
                        failures.append(failed)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    ordered = sorted(latencies) or [float("nan")]
    return {"requests": requests, "seconds": round(seconds, 2), "per_s": round(len(latencies) / seconds, 2),
            "p50_ms": round(1000 * statistics.median(ordered), 1),
            "p95_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 1),
            "failures": len(failures), "failed_with": sorted(set(failures))}


def rss_mib(pid: int) -> float:
    import psutil

    return round(psutil.Process(pid).memory_info().rss / 2**20, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, default=ROOT / "demo" / "runs" / "maf")
    parser.add_argument("--images", type=Path, default=ROOT / "demo" / "data" / "images")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=400, help="requests of the throughput phase")
    parser.add_argument("--soak", type=int, default=5000, help="requests of the memory phase (at most 20,000)")
    parser.add_argument("--check", type=int, default=500, help="the soak's requests before the first reading")
    args = parser.parse_args()
    if not 0 < args.check < args.soak <= 20_000 or not 0 < args.requests <= 20_000 or not 0 < args.clients <= 64:
        raise SystemExit("expected 0 < --check < --soak <= 20000, 0 < --requests <= 20000, 0 < --clients <= 64")

    data = inputs(args.run, args.images)
    baseline = in_process(args.run, data, min(args.requests, 256))
    process, url = start_server(args.run, args.images)
    try:
        load(url, data, args.clients, min(32, args.requests))  # warm-up, not counted
        served = load(url, data, args.clients, args.requests)
        first = load(url, data, args.clients, args.check)
        rss_check = rss_mib(process.pid)
        rest = load(url, data, args.clients, args.soak - args.check)
        rss_end = rss_mib(process.pid)
    finally:
        process.terminate()
        process.wait(30)
    failures = served["failures"] + first["failures"] + rest["failures"]
    print(f"in process: {baseline:.2f} tweets/s; served ({args.clients} clients): {served['per_s']:.2f} requests/s, "
          f"p50 {served['p50_ms']} ms, p95 {served['p95_ms']} ms; ratio {served['per_s'] / baseline:.2f}")
    print(f"resident memory: {rss_check} MiB after {args.check} requests, {rss_end} MiB after {args.soak}; "
          f"{failures} failed requests")
    print(json.dumps({"run": str(args.run), "clients": args.clients, "in_process_per_s": round(baseline, 2),
                      "served": served, "served_ratio": round(served["per_s"] / baseline, 3),
                      "rss_mib_after_check": rss_check, "rss_mib_after_soak": rss_end, "check": args.check,
                      "soak": args.soak, "rss_growth": round(rss_end / rss_check - 1, 4), "failures": failures}))


if __name__ == "__main__":
    main()
