"""Load check of a served heardet model: requests/second and p50/p95 latency.

Starts `mlflow models serve` for MODEL_URI on a free loopback port (heardet.mlops.serving.served),
then sends base64 `dataframe_split` requests of 1 clip and of 16 clips from DATA/wav_test for
SECONDS each, from CONCURRENCY client threads, and reports throughput, latency percentiles
and failed requests. Traffic goes to 127.0.0.1 only; the loop is bounded in time and count.

Warm (default): the same clips again and again, so transcribing members answer from the
transcript cache. `--cold`: the server gets an empty cache and every request carries clips
it has not seen (wav_test then wav_train), so every clip is transcribed; the run stops early
when the clips run out.

    python benchmarks/serve_load.py models:/heardet-ensemble@production data --seconds 120 [--cold]
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from heardet.mlops.serving import served

MAX_REQUESTS = 5000


def body(clips: list[Path]) -> bytes:
    rows = [[base64.b64encode(c.read_bytes()).decode()] for c in clips]
    return json.dumps({"dataframe_split": {"columns": ["audio"], "data": rows}}).encode()


def hammer(port: int, payloads, seconds: float, concurrency: int) -> dict:
    """``payloads``: a zero-argument function returning the next request body (None: no more)."""
    deadline = time.perf_counter() + seconds
    latencies, failures = [], 0

    def one() -> float | None:
        payload = payloads()
        if payload is None:
            return -1.0
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=payload,
                                         headers={"Content-Type": "application/json"})
        start = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=300) as response:
                answer = json.loads(response.read())
                if any(row["label"] == -1 for row in answer["predictions"]):
                    return None
        except (urllib.error.URLError, OSError, ValueError):
            return None
        return time.perf_counter() - start

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        sent = 0
        exhausted = False
        while time.perf_counter() < deadline and sent < MAX_REQUESTS and not exhausted:
            for latency in pool.map(lambda _: one(), range(concurrency)):
                if latency == -1.0:
                    exhausted = True
                    continue
                sent += 1
                if latency is None:
                    failures += 1
                else:
                    latencies.append(latency)
    elapsed = time.perf_counter() - started
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else float("nan")
    return {"requests": len(latencies) + failures, "failed": failures, "seconds": round(elapsed, 1),
            "requests_per_s": round(len(latencies) / elapsed, 3), "p50_s": round(pick(0.5), 3),
            "p95_s": round(pick(0.95), 3), "mean_s": round(statistics.fmean(latencies), 3) if latencies else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_uri")
    parser.add_argument("data", type=Path)
    parser.add_argument("--seconds", type=float, default=120.0, help="per request size")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--cold", action="store_true", help="empty transcript cache, unseen clips only")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    clips = sorted((args.data / "wav_test").glob("*.wav")) + sorted((args.data / "wav_train").glob("*.wav"))
    if len(clips) < 17:
        parser.error(f"{args.data} needs at least 17 clips, found {len(clips)}")
    results = {"model_uri": args.model_uri, "concurrency": args.concurrency, "cold": args.cold}
    unseen = iter(clips[1:])
    lock = threading.Lock()

    def payloads(size: int):
        if not args.cold:
            fixed = body(clips[:size])
            return lambda: fixed

        def take():
            with lock:
                chunk = [c for _, c in zip(range(size), unseen)]
            return body(chunk) if len(chunk) == size else None
        return take

    with tempfile.TemporaryDirectory() as cache, \
            served(args.model_uri, env={"HEARDET_CACHE": cache} if args.cold else None) as port:
        hammer(port, lambda: body(clips[:1]), 5, 1)  # warm-up: first request loads lazily-built parts
        for size in (1, 16):
            results[f"{size}_clip"] = hammer(port, payloads(size), args.seconds, args.concurrency)
            print(size, "clip(s) per request:", results[f"{size}_clip"], flush=True)
    args.out = args.out or Path(f"benchmarks/results/serve_load_{'cold' if args.cold else 'warm'}.json")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
