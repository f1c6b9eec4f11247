"""Transcription speed (× real time) of both backends on the same clips, no cache.

    python benchmarks/transcribe_speed.py data --clips 24 --model whisper-base
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from heardet.audio import SAMPLE_RATE, load_audio
from heardet.whisper.asr import DecodeOptions, make_transcriber


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
    results = {"model": args.model, "clips": len(files), "audio_seconds": round(audio_s, 1)}
    texts = {}
    for backend in ("faster-whisper", "transformers"):
        transcriber = make_transcriber(args.model, backend, DecodeOptions())
        transcriber.transcribe_arrays(audios[:1])  # warm-up
        start = time.perf_counter()
        out = []
        for i in range(0, len(audios), 8):
            out += transcriber.transcribe_arrays(audios[i : i + 8])
        seconds = time.perf_counter() - start
        texts[backend] = [t.text for t in out]
        results[backend] = {"seconds": round(seconds, 1), "x_real_time": round(audio_s / seconds, 2)}
        print(backend, results[backend], flush=True)
    same = sum(a.strip(" .,!?").lower() == b.strip(" .,!?").lower()
               for a, b in zip(texts["faster-whisper"], texts["transformers"]))
    results["identical_transcripts"] = f"{same}/{len(files)}"
    print(json.dumps(results, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
