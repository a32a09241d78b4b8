"""`maf serve` under load, on loopback only, with bounded request counts:

- in process: `MAFPredictor.predict(images=...)` on the inputs, in batches of 32 (tweets/s);
- served: `maf serve RUN` in its own process, and CLIENTS threads that each send one tweet
  with its image per request (JSON, base64) until REQUESTS are answered: throughput, and
  p50/p95 latency. served_ratio = served / in process (goal >= 0.7);
- soak: SOAK more requests; the server's resident memory after CHECK of them and after all
  (goal: within 10%);
- burst: BURST requests at once, each with one PNG of BURST_SIDE x BURST_SIDE pixels (just
  under the upload pixel limit) and ?attention=true, as the Try tab asks: the server's resident
  memory cold, before (after one such request, which allocates what the server keeps), at its
  peak (sampled every 20 ms) and 2 s after the last answer (goal: within
  300 MiB of before);
- mixed: HEAVY clients that each send requests of 64 images, while one client sends MIXED
  text-only requests one after the other: the text requests' p50/p95 latency, beside their
  latency on an idle server (goal: a text request waits for one chunk of images at most);
- failures: requests not answered 200 (goal 0).

The inputs are the run's test tweets with their images (those that are ok), cycled. The
final line is JSON. `--phases` picks the phases (a quick check: `--phases burst,mixed
--burst 4 --burst-side 1500 --mixed 10 --heavy 1`).

    .venv/bin/python benchmarks/serve_load.py [--run demo/runs/maf] [--images demo/data/images]
        [--clients 8] [--requests 400] [--soak 5000] [--check 500] [--burst 50] [--burst-side 4900]
        [--mixed 200] [--heavy 2] [--phases throughput,soak,burst,mixed]
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


def burst(url: str, pid: int, count: int, side: int) -> dict:
    """COUNT requests at once, one side x side PNG each, with the model's view: memory before,
    at the peak and after."""
    import io

    import httpx
    from PIL import Image

    picture = Image.new("RGB", (side, side), (90, 140, 200))
    picture.paste((220, 60, 40), (side // 4, side // 4, side // 2, side // 2))
    out = io.BytesIO()
    picture.save(out, "PNG")
    body = json.dumps({"items": [{"text": "Rob at the beach with Anna", "image": base64.b64encode(out.getvalue())
                                  .decode()}]})
    # one request of the same kind first, so that "before" is a server that has already answered
    # one (the first forward with images and attention allocates what it keeps for its life);
    # the memory before that request is reported too, as rss_mib_cold
    cold = rss_mib(pid)
    httpx.post(url + "/api/predict?attention=true", content=body, timeout=600,
               headers={"content-type": "application/json"}).raise_for_status()
    time.sleep(2)
    before, peak, stop = rss_mib(pid), [0.0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss_mib(pid))
            time.sleep(0.02)

    statuses: list[str] = []

    def send() -> None:
        try:
            answer = httpx.post(url + "/api/predict?attention=true", content=body, timeout=600,
                                headers={"content-type": "application/json"})
            statuses.append(str(answer.status_code))
        except httpx.HTTPError as err:
            statuses.append(type(err).__name__)

    sampler = threading.Thread(target=sample)
    sampler.start()
    started = time.perf_counter()
    senders = [threading.Thread(target=send) for _ in range(count)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join()
    seconds = time.perf_counter() - started
    time.sleep(2)
    stop.set()
    sampler.join()
    after = rss_mib(pid)
    return {"requests": count, "side": side, "png_bytes": len(out.getvalue()), "seconds": round(seconds, 2),
            "rss_mib_cold": cold, "rss_mib_before": before, "rss_mib_peak": max(peak[0], after), "rss_mib_after": after,
            "kept_mib": round(after - before, 1), "answers": {s: statuses.count(s) for s in sorted(set(statuses))}}


def mixed(url: str, data: list[tuple[str, bytes]], texts: int, heavy: int) -> dict:
    """HEAVY clients sending 64-image requests without pause while one client sends TEXTS text-only
    requests: the text requests' latency, idle and under that load."""
    import httpx

    images = [{"text": t, "image": base64.b64encode(i).decode()} for t, i in data]
    big = json.dumps({"items": [images[n % len(images)] for n in range(64)]})
    words = [t for t, _ in data]

    def texts_once(count: int) -> list[float]:
        latencies = []
        with httpx.Client(timeout=600) as http:
            for n in range(count):
                started = time.perf_counter()
                answer = http.post(url + "/api/predict", json={"items": [{"text": words[n % len(words)]}]})
                if answer.status_code == 200:
                    latencies.append(time.perf_counter() - started)
        return latencies

    def summary(latencies: list[float]) -> dict:
        ordered = sorted(latencies) or [float("nan")]
        return {"answered": len(latencies), "p50_ms": round(1000 * statistics.median(ordered), 1),
                "p95_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 1)}

    idle = summary(texts_once(max(5, texts // 4)))
    stop, heavy_times, heavy_failed = threading.Event(), [], []

    def sender() -> None:
        with httpx.Client(timeout=600) as http:
            while not stop.is_set():
                started = time.perf_counter()
                answer = http.post(url + "/api/predict", content=big, headers={"content-type": "application/json"})
                (heavy_times if answer.status_code == 200 else heavy_failed).append(time.perf_counter() - started)

    senders = [threading.Thread(target=sender) for _ in range(heavy)]
    for thread in senders:
        thread.start()
    time.sleep(1)  # the 64-image requests are under way
    loaded = summary(texts_once(texts))
    stop.set()
    for thread in senders:
        thread.join()
    return {"texts": texts, "heavy_clients": heavy, "text_idle": idle, "text_under_load": loaded,
            "heavy_requests": len(heavy_times), "heavy_failed": len(heavy_failed),
            "heavy_p50_s": round(statistics.median(heavy_times), 2) if heavy_times else None}


PHASES = ("throughput", "soak", "burst", "mixed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, default=ROOT / "demo" / "runs" / "maf")
    parser.add_argument("--images", type=Path, default=ROOT / "demo" / "data" / "images")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=400, help="requests of the throughput phase")
    parser.add_argument("--soak", type=int, default=5000, help="requests of the memory phase (at most 20,000)")
    parser.add_argument("--check", type=int, default=500, help="the soak's requests before the first reading")
    parser.add_argument("--burst", type=int, default=50, help="large PNGs sent at once (at most 200)")
    parser.add_argument("--burst-side", type=int, default=4900, help="their side in pixels (4900: 24 MP)")
    parser.add_argument("--mixed", type=int, default=200, help="text requests sent during the 64-image load")
    parser.add_argument("--heavy", type=int, default=2, help="clients sending 64-image requests meanwhile")
    parser.add_argument("--phases", default=",".join(PHASES), help="which phases to run, comma-separated")
    args = parser.parse_args()
    phases = [p for p in args.phases.split(",") if p]
    if set(phases) - set(PHASES):
        raise SystemExit(f"--phases: expected some of {', '.join(PHASES)}, got {args.phases!r}")
    if not 0 < args.check < args.soak <= 20_000 or not 0 < args.requests <= 20_000 or not 0 < args.clients <= 64:
        raise SystemExit("expected 0 < --check < --soak <= 20000, 0 < --requests <= 20000, 0 < --clients <= 64")
    if not 0 < args.burst <= 200 or not 0 < args.mixed <= 5000 or not 0 < args.heavy <= 8:
        raise SystemExit("expected 0 < --burst <= 200, 0 < --mixed <= 5000, 0 < --heavy <= 8")

    data = inputs(args.run, args.images)
    result: dict = {"run": str(args.run), "clients": args.clients, "phases": phases}
    if "throughput" in phases:
        result["in_process_per_s"] = round(in_process(args.run, data, min(args.requests, 256)), 2)
    process, url = start_server(args.run, args.images)
    failures = 0
    try:
        if "throughput" in phases:
            load(url, data, args.clients, min(32, args.requests))  # warm-up, not counted
            served = load(url, data, args.clients, args.requests)
            failures += served["failures"]
            result.update(served=served, served_ratio=round(served["per_s"] / result["in_process_per_s"], 3))
            print(f"in process: {result['in_process_per_s']:.2f} tweets/s; served ({args.clients} clients): "
                  f"{served['per_s']:.2f} requests/s, p50 {served['p50_ms']} ms, p95 {served['p95_ms']} ms; "
                  f"ratio {result['served_ratio']:.2f}")
        if "soak" in phases:
            first = load(url, data, args.clients, args.check)
            rss_check = rss_mib(process.pid)
            rest = load(url, data, args.clients, args.soak - args.check)
            rss_end = rss_mib(process.pid)
            failures += first["failures"] + rest["failures"]
            result.update(rss_mib_after_check=rss_check, rss_mib_after_soak=rss_end, check=args.check,
                          soak=args.soak, rss_growth=round(rss_end / rss_check - 1, 4))
            print(f"resident memory: {rss_check} MiB after {args.check} requests, {rss_end} MiB after {args.soak}")
        if "burst" in phases:
            result["burst"] = found = burst(url, process.pid, args.burst, args.burst_side)
            print(f"burst of {found['requests']} PNGs of {args.burst_side}x{args.burst_side}: resident memory "
                  f"{found['rss_mib_cold']} MiB cold, {found['rss_mib_before']} before (after one such request), "
                  f"{found['rss_mib_peak']} at the peak, "
                  f"{found['rss_mib_after']} after ({found['kept_mib']:+} MiB kept); answers {found['answers']}")
        if "mixed" in phases:
            result["mixed"] = found = mixed(url, data, args.mixed, args.heavy)
            failures += found["heavy_failed"] + found["texts"] - found["text_under_load"]["answered"]
            print(f"text requests beside {args.heavy} clients of 64 images: p50 {found['text_under_load']['p50_ms']} "
                  f"ms, p95 {found['text_under_load']['p95_ms']} ms (idle: p95 {found['text_idle']['p95_ms']} ms); "
                  f"{found['heavy_requests']} requests of 64 images, p50 {found['heavy_p50_s']} s")
    finally:
        process.terminate()
        process.wait(30)
    result["failures"] = failures
    print(f"{failures} failed requests")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
