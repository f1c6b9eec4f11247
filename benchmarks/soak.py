"""Soak a served heardet model: concurrent clients for MINUTES, then requests, errors, p50/p95
latency and the server's memory (RSS of its process tree) from start to end.

Starts `mlflow models serve` for MODEL_URI on a free loopback port with an empty transcript cache.
Each client thread sends 1-clip `dataframe_split` requests, each a clip of DATA/wav_test with a
random gain and a little noise, so that no two requests carry the same bytes (nothing is
answered from the cache). Every tenth request also carries a row that is not audio, which must
come back as label -1 while the clip beside it is scored. An error is any answer other than
HTTP 200 with the good row scored and the bad row flagged. RSS is sampled every 10 s.

    python benchmarks/soak.py models:/heardet-ensemble@production data --minutes 10 --clients 4
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import platform
import tempfile
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import psutil
import soundfile as sf

from heardet.mlops.serving import served

NOT_AUDIO = base64.b64encode(b"this row is not audio").decode()


def server_rss(port: int) -> int:
    """Bytes resident in the processes serving ``port`` (the scoring server and its children)."""
    for proc in psutil.process_iter(["cmdline"]):
        if f"--port {port}" in " ".join(proc.info["cmdline"] or []) and "uvicorn" in " ".join(proc.info["cmdline"]):
            tree = [proc, *proc.children(recursive=True)]
            return sum(p.memory_info().rss for p in tree if p.is_running())
    raise RuntimeError(f"no scoring server process on port {port}")


def variant(clip: Path, rng: np.random.Generator) -> str:
    """``clip`` with a random gain and -60 dB noise, as base64 WAV: new bytes every time."""
    audio, sr = sf.read(clip, dtype="float32")
    audio = audio * rng.uniform(0.7, 1.0) + rng.normal(0, 1e-3, audio.shape).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, np.clip(audio, -1, 1), sr, format="WAV", subtype="PCM_16")
    return base64.b64encode(buf.getvalue()).decode()


def soak(port: int, clips: list[Path], seconds: float, clients: int) -> dict:
    deadline = time.perf_counter() + seconds
    latencies: list[float] = []
    errors: list[str] = []
    rss: list[tuple[float, int]] = [(0.0, server_rss(port))]
    lock = threading.Lock()
    started = time.perf_counter()

    def client(seed: int) -> None:
        rng = np.random.default_rng(seed)
        n = 0
        while time.perf_counter() < deadline:
            n += 1
            rows = [[variant(clips[rng.integers(len(clips))], rng)]] + ([[NOT_AUDIO]] if n % 10 == 0 else [])
            body = json.dumps({"dataframe_split": {"columns": ["audio"], "data": rows}}).encode()
            request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                             headers={"Content-Type": "application/json"})
            start = time.perf_counter()
            try:
                with urllib.request.urlopen(request, timeout=300) as response:
                    answer = json.loads(response.read())["predictions"]
                problem = None
                if answer[0]["label"] not in (0, 1):
                    problem = f"good row not scored: {answer[0]}"
                elif len(rows) == 2 and answer[1]["label"] != -1:
                    problem = f"bad row not flagged: {answer[1]}"
            except (urllib.error.URLError, OSError, ValueError, KeyError, IndexError) as exc:
                problem = f"{type(exc).__name__}: {exc}"
            with lock:
                latencies.append(time.perf_counter() - start)
                if problem:
                    errors.append(problem)

    def sampler() -> None:
        while time.perf_counter() < deadline:
            time.sleep(10)
            rss.append((round(time.perf_counter() - started, 1), server_rss(port)))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)] + [threading.Thread(target=sampler)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    rss.append((round(elapsed, 1), server_rss(port)))
    ordered = sorted(latencies)
    pick = lambda q: round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)  # noqa: E731
    return {"seconds": round(elapsed, 1), "clients": clients, "requests": len(latencies), "errors": len(errors),
            "first_errors": errors[:5], "requests_per_s": round(len(latencies) / elapsed, 3),
            "p50_s": pick(0.5), "p95_s": pick(0.95), "max_s": round(ordered[-1], 3),
            "rss_start_mib": round(rss[0][1] / 2**20, 1), "rss_end_mib": round(rss[-1][1] / 2**20, 1),
            "rss_max_mib": round(max(r for _, r in rss) / 2**20, 1),
            "rss_samples_mib": [(t, round(r / 2**20, 1)) for t, r in rss]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_uri")
    parser.add_argument("data", type=Path)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/soak.json"))
    args = parser.parse_args()
    clips = sorted((args.data / "wav_test").glob("*.wav"))
    if not clips:
        parser.error(f"{args.data}/wav_test holds no clips")
    with tempfile.TemporaryDirectory() as cache, served(args.model_uri, env={"HEARDET_CACHE": cache}) as port:
        loaded = server_rss(port)
        warm = soak(port, clips, 20, 1)  # the first requests build what loads lazily
        result = soak(port, clips, args.minutes * 60, args.clients)
    result.update(model_uri=args.model_uri, rss_after_load_mib=round(loaded / 2**20, 1), warmup_requests=warm["requests"],
                  warmup_errors=warm["errors"], machine=f"{psutil.cpu_count()} CPU cores, "
                  f"{psutil.virtual_memory().total / 2**30:.0f} GiB, {platform.machine()}",
                  date=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    print(json.dumps({k: v for k, v in result.items() if k != "rss_samples_mib"}, indent=2, ensure_ascii=False))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
