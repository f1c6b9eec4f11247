"""Where a model's test errors fall: by engine, by kind of clip, by augmentation step, by voice.

Reads the per-clip scores ``quality.py --scores`` writes and the dataset's manifest, and prints, for
each score column, its macro F1 and its errors (misses and false alarms) counted by engine, by kind
of clip (positive, negative, hard negative, ...), by augmentation step (the share of clips with the
step that it gets wrong, against the share without it) and for the voices with the most errors.

    python benchmarks/errors.py DATA SCORES.csv [--threshold 0.5] [--voices 10]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from heardet.data import MANIFEST_FILE, read_manifest
from heardet.diversity import STEP_NAMES
from heardet.metrics import score


def load_manifest(data: Path) -> pd.DataFrame:
    """The manifest's id, kind, engine and voice per clip, and a column per augmentation step: whether it ran."""
    rows = read_manifest(data / MANIFEST_FILE, keys=None)
    if not rows:
        raise SystemExit(f"{data}: no {MANIFEST_FILE} (a `heardet synth` dataset has one); cannot break errors down")
    frame = pd.DataFrame(list(rows.values()))
    for step, name in STEP_NAMES.items():
        frame[name] = [(a or {}).get(step) is not None for a in frame.get("augmentation", [None] * len(frame))]
    return frame[["id", "kind", "engine", "voice", *STEP_NAMES.values()]]


def breakdown(clips: pd.DataFrame, column: str, threshold: float, n_voices: int) -> str:
    predicted = (clips[column].to_numpy() >= threshold).astype(int)
    labels = clips["label"].to_numpy().astype(int)
    f1 = score(labels, predicted).macro_f1
    frame = clips.assign(miss=(labels == 1) & (predicted == 0), false_alarm=(labels == 0) & (predicted == 1))
    lines = [f"## {column}: macro F1 {f1:.3f} at threshold {threshold:g}; "
             f"{int(frame.miss.sum())} misses of {int(labels.sum())} positives, "
             f"{int(frame.false_alarm.sum())} false alarms of {int((labels == 0).sum())} negatives", ""]
    for by in ("engine", "kind"):
        table = frame.groupby(by).agg(clips=("id", "size"), positives=("label", "sum"), misses=("miss", "sum"),
                                      false_alarms=("false_alarm", "sum"))
        lines += [table.to_string(), ""]
    steps = [(step, frame[frame[step]], frame[~frame[step]]) for step in STEP_NAMES.values() if frame[step].any()]
    table = pd.DataFrame([{"augmentation step": step, "positives with it": int(on.label.sum()),
                           "missed": f"{on.miss.sum() / max(on.label.sum(), 1):.1%}",
                           "missed without it": f"{off.miss.sum() / max(off.label.sum(), 1):.1%}",
                           "negatives with it": int((on.label == 0).sum()),
                           "false alarms": f"{on.false_alarm.sum() / max((on.label == 0).sum(), 1):.1%}",
                           "false alarms without it": f"{off.false_alarm.sum() / max((off.label == 0).sum(), 1):.1%}"}
                          for step, on, off in steps])
    if len(table):
        lines += [table.to_string(index=False), ""]
    voices = frame.groupby("voice").agg(clips=("id", "size"), misses=("miss", "sum"), false_alarms=("false_alarm", "sum"))
    voices = voices.assign(errors=voices.misses + voices.false_alarms).sort_values("errors", ascending=False)
    lines += [f"voices with the most errors (of {len(voices)}):", "", voices.head(n_voices).to_string(), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="the dataset quality.py scored (its manifest.jsonl names engines)")
    parser.add_argument("scores", type=Path, help="the CSV quality.py --scores wrote")
    parser.add_argument("--threshold", type=float, default=0.5, help="a score at or above it calls the phrase")
    parser.add_argument("--voices", type=int, default=10, help="how many of the worst voices to list")
    args = parser.parse_args()
    if not args.scores.is_file():
        raise SystemExit(f"{args.scores}: no such file (write it with quality.py --scores)")
    scores = pd.read_csv(args.scores)
    missing = {"id", "label"} - set(scores.columns)
    if missing:
        raise SystemExit(f"{args.scores}: expected columns id and label (quality.py --scores), missing {sorted(missing)}")
    clips = scores.merge(load_manifest(args.data), on="id", how="left")
    unknown = clips["engine"].isna().sum()
    if unknown:
        raise SystemExit(f"{args.scores}: {unknown} clip ids are not in {args.data / 'manifest.jsonl'}: another dataset?")
    for column in (c for c in scores.columns if c not in ("id", "label")):
        if not np.isfinite(clips[column]).all():
            raise SystemExit(f"{args.scores}: column {column!r} has empty or non-numeric scores")
        print(breakdown(clips, column, args.threshold, args.voices))


if __name__ == "__main__":
    main()
