"""Transcription speed (× real time) and the rule's macro F1 of each backend and window on the same clips, no cache.

    python benchmarks/transcribe_speed.py data --clips 240 --model whisper-base

Rows: faster-whisper with content-sized windows (``DecodeOptions.window="content"``, the default),
faster-whisper padded to 30 s, and transformers (always 30 s). The rule (``'не слыш' in text``) is scored
against ``test_labels.csv`` when the data has one.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import time
from datetime import datetime
from pathlib import Path

from heardet.audio import SAMPLE_RATE, load_audio
from heardet.metrics import score
from heardet.whisper.asr import DecodeOptions, make_transcriber

RULE = "не слыш"
ROWS = (("faster-whisper", "content"), ("faster-whisper", "30s"), ("transformers", "30s"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--model", default="whisper-base")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/transcribe_speed.json"))
    args = parser.parse_args()
    files = sorted((args.data / "wav_test").glob("*.wav"))[: args.clips]
    audios = [load_audio(f) for f in files]
    audio_s = sum(len(a) for a in audios) / SAMPLE_RATE
    labels_csv = args.data / "test_labels.csv"
    labels = None
    if labels_csv.is_file():
        known = {row["id"]: int(row["label"]) for row in csv.DictReader(labels_csv.open(encoding="utf-8"))}
        labels = [known[f.stem] for f in files]
    results = {"model": args.model, "clips": len(files), "audio_seconds": round(audio_s, 1),
               "machine": platform.node(), "when": datetime.now().isoformat(timespec="minutes"), "rows": {}}
    texts = {}
    for backend, window in ROWS:
        transcriber = make_transcriber(args.model, backend, DecodeOptions(window=window))
        transcriber.transcribe_arrays(audios[:1])  # warm-up
        start = time.perf_counter()
        out = []
        for i in range(0, len(audios), 8):
            out += transcriber.transcribe_arrays(audios[i : i + 8])
        seconds = time.perf_counter() - start
        name = f"{backend} {window}"
        texts[name] = [t.text for t in out]
        row = {"seconds": round(seconds, 1), "x_real_time": round(audio_s / seconds, 2)}
        if labels is not None:
            row["rule_macro_f1"] = round(score(labels, [int(RULE in t.lower()) for t in texts[name]]).macro_f1, 3)
        results["rows"][name] = row
        print(name, row, flush=True)
    names = list(texts)
    results["identical_transcripts"] = {
        f"{a} / {b}": f"{sum(_norm(x) == _norm(y) for x, y in zip(texts[a], texts[b]))}/{len(files)}"
        for i, a in enumerate(names) for b in names[i + 1:]}
    print(json.dumps(results, indent=2, ensure_ascii=False))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, ensure_ascii=False))


def _norm(text: str) -> str:
    return text.strip(" .,!?").lower()


if __name__ == "__main__":
    main()
