"""Whole-call scanning: speed with and without VAD, and how well events are found, per model.

For each model (``name=URI``) and each VAD setting, scans every call of CALLS (a folder from
``heardet synth --calls``) in a fresh process and reports × real time, windows and seconds of
audio sent to the model, the process's peak resident memory, and, against ``events.json``:
event recall, false accepts per hour, call-level macro F1 and median onset error, first at the
model's own threshold, then at the thresholds that kept false accepts at or under 0.5 and 5 per
hour on the validation calls (``--val``, calls of the training voices and sentences; the
threshold is chosen there and applied here, never chosen on the calls it is scored on).

    python benchmarks/scan_calls.py CALLS --val VAL_CALLS \\
        --model finetune=models:/heardet-finetune-whisper-base/1 --model ensemble=models:/heardet-ensemble/1 \\
        --no-vad finetune --out benchmarks/results/scan_calls.json

``--no-vad NAME`` adds a run without VAD for that model; ``--max-calls N`` scans only the first N
calls (for models that transcribe: whisper-base transcribes at about 3.5× real time on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import resource
import time
from pathlib import Path

FA_TARGETS = (0.5, 5.0)


def _scan(uri: str, folder: str, vad: bool, max_calls: int, queue) -> None:
    """Child process: scan the calls, put (results, seconds, peak RSS MiB) on the queue."""
    import logging

    from heardet.mlops.scoring import load_model
    from heardet.mlops.store import use_store
    from heardet.scan import ScanConfig, timed_scan
    from heardet.synth.calls import CALLS_DIR

    logging.basicConfig(level=logging.WARNING)
    use_store()
    files = sorted(Path(folder, CALLS_DIR).glob("*.wav"))[: max_calls or None]
    results, seconds = timed_scan(load_model(uri), files, ScanConfig(vad=vad), progress=False)
    queue.put((results, seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def scan(uri: str, folder: Path, vad: bool, max_calls: int = 0):
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_scan, args=(uri, str(folder), vad, max_calls, queue))
    process.start()
    out = queue.get()
    process.join()
    return out


def main() -> None:
    from heardet.scan import call_metrics, det_points, operating_point
    from heardet.synth.calls import EVENTS_FILE, read_events

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("calls", type=Path)
    parser.add_argument("--val", type=Path, required=True, help="calls of the training voices: thresholds")
    parser.add_argument("--model", action="append", required=True, metavar="NAME=URI")
    parser.add_argument("--no-vad", action="append", default=[], metavar="NAME", help="also scan without VAD")
    parser.add_argument("--max-calls", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    truth, val_truth = read_events(args.calls / EVENTS_FILE), read_events(args.val / EVENTS_FILE)
    rows = []
    for item in args.model:
        name, _, uri = item.partition("=")
        val_results, *_ = scan(uri, args.val, True, args.max_calls)
        points = det_points(val_results, val_truth, 2.0)
        chosen = {t: (p.threshold if (p := operating_point(points, t)) else None) for t in FA_TARGETS}
        for vad in (True, False) if name in args.no_vad else (True,):
            results, seconds, peak = scan(uri, args.calls, vad, args.max_calls)
            audio = sum(r.duration_s for r in results)
            row = {"model": name, "uri": uri, "vad": vad, "files": len(results), "audio_h": audio / 3600,
                   "seconds": seconds, "x_real_time": audio / seconds, "peak_rss_mib": peak,
                   "windows_scored": sum(r.scored for r in results), "grid_windows": sum(r.windows for r in results),
                   "audio_scored_h": sum(r.scored_s for r in results) / 3600,
                   "own": vars(call_metrics(results, truth, None, 2.0)),
                   **{f"at_{t:g}_fah_on_val": (vars(call_metrics(results, truth, th, 2.0)) if th is not None else None)
                      for t, th in chosen.items()}}
            rows.append(row)
            print(json.dumps(row), flush=True)

    print(f"\n{platform.node()}, {time.strftime('%Y-%m-%d %H:%M')}; {rows[0]['files']} calls, "
          f"{rows[0]['audio_h']:.2f} h of stereo 8 kHz audio ({args.calls})\n")
    print("| model | VAD | × real time | audio sent to the model, h | peak RSS, MiB | threshold | event recall "
          "| FA/h | call macro F1 | median onset error, s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        for label, m in (("model's own", r["own"]), *((f"{t:g} FA/h on val", r[f"at_{t:g}_fah_on_val"])
                                                      for t in FA_TARGETS)):
            if m is None:
                print(f"| {r['model']} | {'on' if r['vad'] else 'off'} | | | | {label}: not reachable | | | | |")
                continue
            onset = "—" if m["onset_error_s"] is None else f"{m['onset_error_s']:.2f}"
            threshold = label if label == "model's own" else f"{m['threshold']:.3f} ({label})"
            print(f"| {r['model']} | {'on' if r['vad'] else 'off'} | {r['x_real_time']:.0f} | "
                  f"{r['audio_scored_h']:.2f} | {r['peak_rss_mib']:.0f} | {threshold} | {m['event_recall']:.3f} | "
                  f"{m['fa_per_hour']:.2f} | {m['call_f1']:.3f} | {onset} |")
    if args.out:
        args.out.write_text(json.dumps({"measured": time.strftime("%Y-%m-%d %H:%M"), "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
