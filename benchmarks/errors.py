"""Where a model's test errors fall: by engine, by kind of clip, by augmentation step, by voice.

Reads the per-clip scores ``quality.py --scores`` writes and the dataset's manifest, and prints, for
each score column, its macro F1 and its errors (misses and false alarms) counted by engine, by kind
of clip (positive, negative, hard negative, ...), by augmentation step (the share of clips with the
step that it gets wrong, against the share without it) and for the voices with the most errors.

Given several score files (or one with several columns), it also lists the clips that most of the
columns get wrong (``--shared K``: wrong for at least K of them; default all), with what each says,
the augmentation it went through and the columns that get it right, and with ``--transcribe`` what Whisper (``--whisper``, the rule
approach's transcriber and its transcript cache) hears in it and whether the rule fires: errors every
model shares point at the audio or the encoder rather than at one recipe.

``--mean COLUMNS`` also breaks down the mean of those score columns (comma-separated, as this script names
them; ``all`` for every one): the clip's mean probability over several fits, which is how a model of several
fits of one recipe scores it (``FinetuneConfig.fits``), from fits already scored one by one.

    python benchmarks/errors.py DATA SCORES.csv [MORE.csv ...] [--threshold 0.5] [--voices 10]
                                [--shared K] [--mean COLUMNS] [--transcribe] [--whisper whisper-base]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from heardet.approaches.rule import rule_label
from heardet.data import MANIFEST_FILE, read_manifest
from heardet.diversity import STEP_NAMES, step_words
from heardet.metrics import score


def load_manifest(data: Path) -> pd.DataFrame:
    """The manifest's id, kind, engine and voice per clip, and a column per augmentation step: whether it ran."""
    rows = read_manifest(data / MANIFEST_FILE, keys=None)
    if not rows:
        raise SystemExit(f"{data}: no {MANIFEST_FILE} (a `heardet synth` dataset has one); cannot break errors down")
    frame = pd.DataFrame(list(rows.values()))
    for column in ("text", "augmentation"):  # a dataset that is not heardet synth's may lack them
        if column not in frame:
            frame[column] = None
    for step, name in STEP_NAMES.items():
        frame[name] = [(a or {}).get(step) is not None for a in frame["augmentation"]]
    return frame[["id", "kind", "engine", "voice", "text", "augmentation", *STEP_NAMES.values()]]


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


def read_scores(paths: list[Path]) -> pd.DataFrame:
    """The score files side by side on ``id``: one column per row of each; a column name two files share gets
    its file's name in front."""
    frames = []
    for path in paths:
        if not path.is_file():
            raise SystemExit(f"{path}: no such file (write it with quality.py --scores)")
        frame = pd.read_csv(path)
        missing = {"id", "label"} - set(frame.columns)
        if missing:
            raise SystemExit(f"{path}: expected columns id and label (quality.py --scores), missing {sorted(missing)}")
        if frame["id"].duplicated().any():
            raise SystemExit(f"{path}: clip ids repeat (one row per clip expected)")
        frames.append((path, frame))
    columns = [c for _, f in frames for c in f.columns if c not in ("id", "label")]
    merged = None
    for path, frame in frames:
        frame = frame.rename(columns={c: f"{path.stem}/{c}" for c in frame.columns
                                      if c not in ("id", "label") and columns.count(c) > 1})
        if merged is None:
            merged = frame
            continue
        joined = merged.merge(frame, on="id", how="outer", suffixes=("", "_other"), indicator=True)
        if (joined["_merge"] != "both").any():
            raise SystemExit(f"{path}: its clip ids are not those of {paths[0]}: scores of another test split?")
        if (joined["label"] != joined["label_other"]).any():
            raise SystemExit(f"{path}: its labels differ from {paths[0]}'s for the same clip ids")
        merged = joined.drop(columns=["label_other", "_merge"])
    return merged


def columns_wrong(clips: pd.DataFrame, columns: list[str], threshold: float) -> np.ndarray:
    """Per clip, how many of the score columns call it the wrong way at ``threshold``."""
    labels = clips["label"].to_numpy().astype(int)
    return ((clips[columns].to_numpy() >= threshold).astype(int) != labels[:, None]).sum(axis=1)


def shared_errors(clips: pd.DataFrame, columns: list[str], wrong: np.ndarray, threshold: float, at_least: int,
                  transcripts: dict[str, str] | None) -> str:
    """How many clips k of the columns get wrong (``wrong``: :func:`columns_wrong`), for each k, and the clips
    at least ``at_least`` get wrong."""
    labels = clips["label"].to_numpy().astype(int)
    lines = [f"## errors the {len(columns)} score columns share (threshold {threshold:g})", "",
             "| columns wrong | positives missed | negatives called |", "|---|---|---|"]
    for k in range(1, len(columns) + 1):
        lines.append(f"| {k} | {int(((wrong == k) & (labels == 1)).sum())} | {int(((wrong == k) & (labels == 0)).sum())} |")
    shared = clips[wrong >= at_least].assign(wrong=wrong[wrong >= at_least]).sort_values(["label", "id"],
                                                                                          ascending=[False, True])
    lines += ["", f"{len(shared)} clips wrong for at least {at_least} of {len(columns)} columns "
              f"({int((shared.label == 1).sum())} positives missed, {int((shared.label == 0).sum())} negatives called):", ""]
    head = "| clip | label | wrong | engine | voice | says | augmentation | lowest–highest score | right in |"
    if transcripts is not None:
        head += " Whisper hears | rule fires |"
    lines += [head, "|" + "---|" * head.count(" | ") + "---|"]
    for row in shared.to_dict("records"):
        values = [row[c] for c in columns]
        cells = [row["id"], str(row["label"]), f"{row['wrong']}/{len(columns)}", row["engine"], row["voice"],
                 f"«{row['text']}»" if row["text"] else "—",
                 ", ".join(step_words(row["augmentation"], levels=True)) or "none",
                 f"{min(values):.3f}–{max(values):.3f}",
                 ", ".join(c for c, v in zip(columns, values) if (v >= threshold) == bool(row["label"])) or "—"]
        if transcripts is not None:
            heard = transcripts.get(row["id"], "")
            cells += [f"«{heard}»" if heard else "(nothing)", "yes" if rule_label(heard) else "no"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def transcribe(data: Path, ids: list[str], model: str) -> dict[str, str]:
    """What ``model`` hears in each of these test clips (the rule approach's transcriber, its transcript cache)."""
    from heardet.data import load_dataset
    from heardet.whisper.asr import make_transcriber, transcribe_clips

    wanted = set(ids)
    clips = [c for c in load_dataset(data).test if c.id in wanted]
    table = transcribe_clips(make_transcriber(model), clips, progress=False)
    return dict(zip(table["id"], table["text"].fillna("")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="the dataset quality.py scored (its manifest.jsonl names engines)")
    parser.add_argument("scores", type=Path, nargs="+", help="the CSV(s) quality.py --scores wrote")
    parser.add_argument("--threshold", type=float, default=0.5, help="a score at or above it calls the phrase")
    parser.add_argument("--voices", type=int, default=10, help="how many of the worst voices to list")
    parser.add_argument("--shared", type=int, default=0,
                        help="list the clips at least K score columns get wrong (0 = all of them; with one column, "
                             "its errors); only with two or more columns unless given")
    parser.add_argument("--mean", default="",
                        help="also break down the mean of these score columns (comma-separated, or 'all')")
    parser.add_argument("--transcribe", action="store_true",
                        help="add what Whisper hears in each listed clip and whether the rule fires on it")
    parser.add_argument("--whisper", default="whisper-base", help="the Whisper --transcribe uses")
    args = parser.parse_args()
    scores = read_scores(args.scores)
    columns = [c for c in scores.columns if c not in ("id", "label")]
    if not columns:
        raise SystemExit(f"{args.scores[0]}: no score columns besides id and label")
    if not 0 <= args.shared <= len(columns):
        parser.error(f"--shared must be between 0 and the number of score columns ({len(columns)}), got {args.shared}")
    clips = scores.merge(load_manifest(args.data), on="id", how="left")
    unknown = clips["engine"].isna().sum()
    if unknown:
        raise SystemExit(f"{args.scores[0]}: {unknown} clip ids are not in {args.data / MANIFEST_FILE}: another dataset?")
    for column in columns:
        if not np.isfinite(clips[column]).all():
            raise SystemExit(f"score column {column!r} has empty or non-numeric scores (one row per clip expected)")
        print(breakdown(clips, column, args.threshold, args.voices))
    if args.mean:
        blended = columns if args.mean == "all" else args.mean.split(",")
        unknown = sorted(set(blended) - set(columns))
        if unknown or len(blended) < 2:
            raise SystemExit(f"--mean: expected two or more of the score columns {columns}, got {blended}"
                             f"{f' ({unknown} are not among them)' if unknown else ''}")
        name = f"mean of {', '.join(blended)}"
        print(breakdown(clips.assign(**{name: clips[blended].mean(axis=1)}), name, args.threshold, args.voices))
    if len(columns) > 1 or args.shared or args.transcribe:
        at_least = args.shared or len(columns)
        wrong = columns_wrong(clips, columns, args.threshold)
        transcripts = (transcribe(args.data, clips["id"][wrong >= at_least].tolist(), args.whisper)
                       if args.transcribe else None)
        print(shared_errors(clips, columns, wrong, args.threshold, at_least, transcripts))


if __name__ == "__main__":
    main()
