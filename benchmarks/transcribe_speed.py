"""Transcription speed (× real time) and accuracy of each backend and window on the same clips, no cache.

    python benchmarks/transcribe_speed.py data --clips 240 --model whisper-base
    python benchmarks/transcribe_speed.py data --clips 240 --train-clips 600 --rows fw-content,fw-30s

Rows (``--rows``): faster-whisper with content-sized windows (``fw-content``, ``DecodeOptions.window="content"``,
the default), faster-whisper padded to 30 s (``fw-30s``) and transformers (``hf-30s``, always 30 s). Each row
transcribes the first ``--clips`` test clips; the rule (``'не слыш' in text``) is scored on them. With
``--train-clips N`` it also transcribes the first N train clips, cross-validates CatBoost on them (5 folds,
grouped by voice, as the catboost entry point) and scores its final model on the test clips.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import datetime
from pathlib import Path

import numpy as np

from heardet.approaches import catboost
from heardet.audio import SAMPLE_RATE, load_audio
from heardet.data import groups_of, load_dataset
from heardet.metrics import score
from heardet.whisper.asr import DecodeOptions, make_transcriber

RULE = "не слыш"
ROWS = {"fw-content": ("faster-whisper", "content"), "fw-30s": ("faster-whisper", "30s"),
        "hf-30s": ("transformers", "30s")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--clips", type=int, default=24, help="test clips to transcribe (the first N by id)")
    parser.add_argument("--train-clips", type=int, default=0, help="train clips for CatBoost (0: no CatBoost)")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, of {', '.join(ROWS)}")
    parser.add_argument("--model", default="whisper-base")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/transcribe_speed.json"))
    args = parser.parse_args()
    rows = args.rows.split(",")
    if unknown := sorted(set(rows) - set(ROWS)):
        parser.error(f"--rows: unknown {unknown}; choose from {', '.join(ROWS)}")
    dataset = load_dataset(args.data)
    test = sorted(dataset.test, key=lambda c: c.id)[: args.clips]
    train = sorted(dataset.train, key=lambda c: c.id)[: args.train_clips]
    audios = [load_audio(c.path) for c in test]
    train_audios = [load_audio(c.path) for c in train]
    audio_s = sum(len(a) for a in audios) / SAMPLE_RATE
    labels = [c.label for c in test] if all(c.label is not None for c in test) else None
    results = {"model": args.model, "test_clips": len(test), "test_audio_seconds": round(audio_s, 1),
               "train_clips": len(train), "machine": platform.node(),
               "when": datetime.now().isoformat(timespec="minutes"), "rows": {}}
    texts = {}
    for name in rows:
        backend, window = ROWS[name]
        transcriber = make_transcriber(args.model, backend, DecodeOptions(window=window))
        transcriber.transcribe_arrays(audios[:1])  # warm-up
        start = time.perf_counter()
        texts[name] = transcribe(transcriber, audios)
        seconds = time.perf_counter() - start
        row = {"seconds": round(seconds, 1), "x_real_time": round(audio_s / seconds, 2)}
        if labels is not None:
            row["rule_macro_f1"] = round(score(labels, [int(RULE in t.lower()) for t in texts[name]]).macro_f1, 3)
        if train and labels is not None:
            row.update(catboost_scores(transcribe(transcriber, train_audios), train, texts[name], labels))
        results["rows"][name] = row
        print(name, row, flush=True)
    results["identical_transcripts"] = {
        f"{a} / {b}": f"{sum(_norm(x) == _norm(y) for x, y in zip(texts[a], texts[b]))}/{len(test)}"
        for i, a in enumerate(rows) for b in rows[i + 1:]}
    print(json.dumps(results, indent=2, ensure_ascii=False))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, ensure_ascii=False))


def transcribe(transcriber, audios: list[np.ndarray]) -> list[str]:
    out = []
    for i in range(0, len(audios), 8):
        out += [t.text for t in transcriber.transcribe_arrays(audios[i : i + 8])]
    return out


def catboost_scores(train_texts: list[str], train, test_texts: list[str], test_labels: list[int]) -> dict:
    """CatBoost's voice-grouped 5-fold CV on the train transcripts, and its final model on the test ones."""
    labels = np.array([c.label for c in train], dtype=int)
    config = catboost.CatBoostConfig(n_folds=5)
    cv = catboost.cross_validate(train_texts, labels, config, progress=False, groups=groups_of(train, "voice"))
    model = catboost.fit_final(train_texts, labels, config, int(np.median(cv.extra["best_iteration"])))
    predicted = (catboost.predict_proba(model, test_texts) >= cv.threshold).astype(int)
    return {"catboost_cv_macro_f1": round(cv.mean_f1, 3),
            "catboost_test_macro_f1": round(score(test_labels, predicted).macro_f1, 3)}


def _norm(text: str) -> str:
    return text.strip(" .,!?").lower()


if __name__ == "__main__":
    main()
