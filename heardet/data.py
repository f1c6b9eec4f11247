"""The competition data layout: ``wav_train/``, ``wav_test/``, ``word_bounds.json``.

```
data/
  wav_train/<id>.wav      training recordings
  wav_test/<id>.wav       recordings to score
  word_bounds.json        {"<id>": [[start_s, end_s], ...]}: train clips with the phrase
  test_labels.csv         optional id,label for wav_test (makes the test split scoreable)
  test_word_bounds.json   optional: the phrase bounds of the test clips that say it
  manifest.jsonl          optional (heardet synth writes it): per clip its engine, voice, frame, augmentation
```
Train clips not listed in ``word_bounds.json`` are label 0. The manifest's facts ride along as
``Clip.meta``: folds are grouped by ``voice`` and leave-one-engine-out scores need ``engine``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from heardet.audio import AUDIO_EXTENSIONS, AudioError, audio_info, load_audio
from heardet.diversity import Diversity, diversity

logger = logging.getLogger(__name__)

TRAIN_DIR = "wav_train"
TEST_DIR = "wav_test"
BOUNDS_FILE = "word_bounds.json"
TEST_LABELS_FILE = "test_labels.csv"
TEST_BOUNDS_FILE = "test_word_bounds.json"
MANIFEST_FILE = "manifest.jsonl"
META_KEYS = ("engine", "voice", "voice_settings", "frame", "kind", "middle", "position", "tempo", "repeats",
             "augmentation")

Bounds = tuple[tuple[float, float], ...]


class DataError(ValueError):
    """The data directory does not follow the layout; the message says what was expected."""


@dataclass(frozen=True)
class Clip:
    """One recording: ``label`` is None when the split carries no labels."""

    id: str
    path: Path
    split: str
    label: int | None = None
    bounds: Bounds = ()
    meta: dict[str, Any] = field(default_factory=dict, compare=False)  # manifest facts (engine, voice, …)


@dataclass(frozen=True)
class Dataset:
    """Clips of a data directory, per split."""

    root: Path
    train: tuple[Clip, ...]
    test: tuple[Clip, ...]
    orphan_bounds: tuple[str, ...] = ()  # word_bounds keys with no train audio file

    def split(self, name: str) -> tuple[Clip, ...]:
        if name not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {name!r}")
        return self.train if name == "train" else self.test

    @property
    def test_labelled(self) -> bool:
        return bool(self.test) and all(c.label is not None for c in self.test)


def parse_bounds(entry: Any, key: str = "?", source: str = BOUNDS_FILE) -> Bounds:
    """Normalise one ``word_bounds.json`` value to ``((start, end), ...)``.

    Accepted: ``[[start, end], ...]``, ``[start, end]``, ``{"start": s, "end": e}`` or a
    list of such dicts. Times are seconds, ``0 <= start < end``.

    Raises:
        DataError: naming the key and showing the offending entry.
    """

    def bad(why: str) -> DataError:
        shown = json.dumps(entry, ensure_ascii=False)
        shown = shown if len(shown) < 200 else shown[:200] + "…"
        return DataError(
            f"{source}: entry {key!r} = {shown}: {why}; expected [[start, end], ...], "
            '[start, end], {"start": s, "end": e} or a list of such dicts (seconds)'
        )

    def pair(item: Any) -> tuple[float, float]:
        if isinstance(item, dict):
            if set(item) != {"start", "end"}:
                raise bad(f"dict keys are {sorted(item)}, expected exactly 'start' and 'end'")
            item = [item["start"], item["end"]]
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            raise bad("a bound must be a pair [start, end]")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in item):
            raise bad("start and end must be numbers")
        start, end = float(item[0]), float(item[1])
        if not (math.isfinite(start) and math.isfinite(end)) or start < 0 or end <= start:
            raise bad(f"need 0 <= start < end, got start={start}, end={end}")
        return start, end

    if isinstance(entry, dict):
        return (pair(entry),)
    if isinstance(entry, (list, tuple)):
        if not entry:
            raise bad("empty list")
        if len(entry) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in entry):
            return (pair(entry),)
        return tuple(pair(item) for item in entry)
    raise bad(f"a {type(entry).__name__} is not a bound")


def read_bounds(path: Path) -> dict[str, Bounds]:
    """Read and validate ``word_bounds.json``."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise DataError(f"{path}: expected a JSON object {{id: bounds}}, found a {type(raw).__name__}")
    return {Path(str(key)).stem: parse_bounds(value, str(key), path.name) for key, value in raw.items()}


def read_labels_csv(path: Path) -> dict[str, int]:
    """Read an ``id,label`` CSV (labels 0/1)."""
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"id", "label"} - set(reader.fieldnames or [])
        if missing:
            raise DataError(f"{path}: missing column(s) {sorted(missing)}; found {reader.fieldnames}, expected id,label")
        labels: dict[str, int] = {}
        for line, row in enumerate(reader, start=2):
            value = (row["label"] or "").strip()
            if value not in ("0", "1"):
                raise DataError(f"{path}:{line}: label {value!r} for id {row['id']!r}; expected 0 or 1")
            labels[Path(row["id"].strip()).stem] = int(value)
    return labels


def read_manifest(path: Path, keys: tuple[str, ...] | None = META_KEYS) -> dict[str, dict[str, Any]]:
    """``manifest.jsonl`` rows by clip id (a later row for an id wins), keeping ``keys`` (None: whole rows);
    a line that is not a clip row (e.g. torn by an interrupted write) is skipped with a warning."""
    rows: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return rows
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            row = json.loads(line)
            rows[str(row["id"])] = row if keys is None else {k: row[k] for k in keys if k in row}
        except (ValueError, KeyError, TypeError):
            logger.warning("%s line %d is not a clip row (an interrupted write?); ignoring it", path, number)
    return rows


def groups_of(clips: tuple[Clip, ...] | list[Clip], key: str = "voice") -> list[str] | None:
    """Each clip's ``meta[key]`` (e.g. its voice), or None when a clip lacks it (data made elsewhere)."""
    values = [c.meta.get(key) for c in clips]
    return None if any(v is None for v in values) else [str(v) for v in values]


def subsample_clips(clips: tuple[Clip, ...] | list[Clip], max_clips: int, seed: int = 42) -> list[Clip]:
    """A subsample of ``max_clips`` clips stratified by label, in their original order (all of them when
    ``max_clips`` is 0 or not fewer than there are). The same arguments give the same clips, so two entry
    points that take the same subsample (transcribe and catboost) see the same clips."""
    clips = list(clips)
    if not 0 < max_clips < len(clips):
        return clips
    from sklearn.model_selection import train_test_split

    labels = [-1 if c.label is None else c.label for c in clips]
    counts = {label: labels.count(label) for label in set(labels)}
    stratify = labels if min(counts.values()) >= 2 and max_clips >= len(counts) else None
    rows, _ = train_test_split(list(range(len(clips))), train_size=max_clips, stratify=stratify, random_state=seed)
    return [clips[i] for i in sorted(rows)]


def list_audio(directory: Path) -> list[Path]:
    """Audio files directly inside ``directory`` (by extension), sorted by name."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)


def load_dataset(root: str | Path, require_train: bool = False) -> Dataset:
    """Read a data directory in the competition layout.

    Args:
        root: the directory holding ``wav_train/`` and/or ``wav_test/``.
        require_train: fail unless there are labelled training clips.

    Raises:
        DataError: the directory or a required part is missing or malformed.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data directory {root.resolve()} does not exist; create one with `heardet synth --out {root}`")
    train_files, test_files = list_audio(root / TRAIN_DIR), list_audio(root / TEST_DIR)
    if not train_files and not test_files:
        loose = list_audio(root)
        hint = (f"; the {len(loose)} audio file(s) directly in {root} belong in {TRAIN_DIR}/ (to train on, "
                f"labelled by {BOUNDS_FILE}) or {TEST_DIR}/ (to score)") if loose else ""
        raise DataError(
            f"{root}: no audio in {TRAIN_DIR}/ or {TEST_DIR}/ (extensions {', '.join(AUDIO_EXTENSIONS)}){hint}"
        )
    bounds_path = root / BOUNDS_FILE
    bounds = read_bounds(bounds_path) if bounds_path.exists() else {}
    if train_files and not bounds_path.exists():
        logger.warning("%s has no %s: every train clip is labelled 0", root, BOUNDS_FILE)
    if require_train and not train_files:
        raise DataError(f"{root}: training needs labelled clips in {TRAIN_DIR}/, found none")
    meta = read_manifest(root / MANIFEST_FILE)
    train = tuple(
        Clip(p.stem, p, "train", int(p.stem in bounds), bounds.get(p.stem, ()), meta.get(p.stem, {}))
        for p in train_files
    )
    labels_path = root / TEST_LABELS_FILE
    test_labels = read_labels_csv(labels_path) if labels_path.exists() else {}
    test_bounds_path = root / TEST_BOUNDS_FILE
    test_bounds = read_bounds(test_bounds_path) if test_bounds_path.exists() else {}
    test = tuple(Clip(p.stem, p, "test", test_labels.get(p.stem), test_bounds.get(p.stem, ()), meta.get(p.stem, {}))
                 for p in test_files)
    if test_labels:
        unlabelled = [c.id for c in test if c.label is None]
        if unlabelled:
            raise DataError(f"{labels_path}: no label for {len(unlabelled)} test clip(s), e.g. {unlabelled[:5]}")
        contradicted = [c.id for c in test if c.bounds and c.label == 0]
        if contradicted:
            raise DataError(f"{test_bounds_path}: bounds for {len(contradicted)} clip(s) that {TEST_LABELS_FILE} "
                            f"labels 0, e.g. {contradicted[:5]}; bounds belong to clips that say the phrase")
    train_ids = {c.id for c in train}
    orphans = tuple(sorted(k for k in bounds if k not in train_ids))
    return Dataset(root, train, test, orphans)


@dataclass
class SplitReport:
    """What :func:`validate_dataset` found in one split."""

    name: str
    n_clips: int = 0
    labels: dict[str, int] = field(default_factory=dict)
    durations: list[float] = field(default_factory=list)
    sample_rates: dict[int, int] = field(default_factory=dict)
    channels: dict[int, int] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)  # file name -> reason


@dataclass
class ValidationReport:
    """The result of :func:`validate_dataset`; ``ok`` is False when something needs fixing."""

    root: Path
    splits: list[SplitReport]
    orphan_bounds: list[str]
    bounds_outside_audio: list[str]
    duplicate_ids: list[list[str]]
    duplicate_content: list[list[str]]
    untrainable: str = ""  # why nothing can be trained from the directory; empty when something can
    diversity: Diversity | None = None  # from the manifest, when there is one

    @property
    def ok(self) -> bool:
        return not (
            any(s.unreadable for s in self.splits) or self.orphan_bounds or self.bounds_outside_audio
            or self.duplicate_ids or self.duplicate_content or self.untrainable
        )

    def render(self) -> str:
        """A human-readable report."""
        lines = [f"dataset: {self.root}"]
        for s in self.splits:
            labels = ", ".join(f"{k}: {v}" for k, v in sorted(s.labels.items())) or "unlabelled"
            lines.append(f"  {s.name}: {s.n_clips} clips ({labels})")
            if s.durations:
                d = sorted(s.durations)
                lines.append(
                    f"    duration s: min {d[0]:.2f}  median {d[len(d) // 2]:.2f}  max {d[-1]:.2f}  "
                    f"total {sum(d) / 60:.1f} min"
                )
            if s.sample_rates:
                rates = ", ".join(f"{r} Hz × {n}" for r, n in sorted(s.sample_rates.items()))
                lines.append(f"    sample rates: {rates}; channels: {dict(sorted(s.channels.items()))}")
            for name, reason in sorted(s.unreadable.items()):
                lines.append(f"    UNREADABLE {name}: {reason}")
        problems = [
            (self.orphan_bounds, f"{BOUNDS_FILE} keys with no audio file in {TRAIN_DIR}/"),
            (self.bounds_outside_audio, "bounds past the end of their clip"),
        ]
        for items, what in problems:
            if items:
                lines.append(f"  {what}: {len(items)}: {', '.join(items[:10])}{' …' if len(items) > 10 else ''}")
        for group in self.duplicate_ids:
            lines.append(f"  duplicate id (same stem, several files): {', '.join(group)}")
        for group in self.duplicate_content:
            lines.append(f"  duplicate content (identical bytes): {', '.join(group)}")
        if self.untrainable:
            lines.append(f"  nothing can be trained from it: {self.untrainable}")
        if self.diversity:
            lines.append(self.diversity.render())
        lines.append("  OK" if self.ok else "  PROBLEMS FOUND (see above)")
        return "\n".join(lines)


def validate_dataset(root: str | Path, progress: bool = True) -> ValidationReport:
    """Read every clip of a data directory and report counts, durations and problems.

    Unreadable, empty or silent files are listed, never raised; layout errors (a
    malformed ``word_bounds.json``) raise :class:`DataError`.
    """
    dataset = load_dataset(root)
    by_stem: dict[tuple[str, str], list[str]] = defaultdict(list)
    by_hash: dict[str, list[str]] = defaultdict(list)
    splits, outside = [], []
    for name, clips in (("train", dataset.train), ("test", dataset.test)):
        report = SplitReport(name, n_clips=len(clips))
        counts: Counter[str] = Counter()
        rates: Counter[int] = Counter()
        channels: Counter[int] = Counter()
        for clip in tqdm(clips, desc=f"validate {name}", unit="clip", disable=not progress):
            rel = f"{clip.path.parent.name}/{clip.path.name}"
            by_stem[(name, clip.id)].append(rel)
            by_hash[hashlib.sha1(clip.path.read_bytes()).hexdigest()].append(rel)
            counts["unlabelled" if clip.label is None else f"label {clip.label}"] += 1
            try:
                duration, rate, n_channels = audio_info(clip.path)
                load_audio(clip.path)
            except AudioError as exc:
                report.unreadable[rel] = exc.reason
                continue
            except Exception as exc:  # noqa: BLE001 - a report lists every failure, whatever it is
                report.unreadable[rel] = f"{type(exc).__name__}: {exc}"
                continue
            report.durations.append(duration)
            rates[rate] += 1
            channels[n_channels] += 1
            if clip.bounds and max(end for _, end in clip.bounds) > duration + 0.05:
                outside.append(clip.id)
        report.labels, report.sample_rates, report.channels = dict(counts), dict(rates), dict(channels)
        splits.append(report)
    return ValidationReport(
        root=dataset.root,
        splits=splits,
        orphan_bounds=list(dataset.orphan_bounds),
        bounds_outside_audio=outside,
        duplicate_ids=[files for files in by_stem.values() if len(files) > 1],
        duplicate_content=[files for files in by_hash.values() if len(files) > 1],
        untrainable=why_untrainable(dataset),
        diversity=diversity({"train": [c.meta for c in dataset.train], "test": [c.meta for c in dataset.test]}),
    )


TRAINING_LAYOUT = (f"training needs {TRAIN_DIR}/<id>.wav (the recordings) and {BOUNDS_FILE} "
                   '({"<id>": [[start_s, end_s], ...]} for every clip with the phrase; the others are label 0)')


def why_untrainable(dataset: Dataset) -> str:
    """Why no model can be trained from ``dataset`` (no labelled clips, or one label only);
    empty when one can."""
    has_bounds = (dataset.root / BOUNDS_FILE).is_file()
    if not dataset.train:
        missing = f"no audio in {TRAIN_DIR}/" + ("" if has_bounds else f" and no {BOUNDS_FILE}")
        return f"{missing}; {TRAINING_LAYOUT}"
    if not has_bounds:
        return f"{TRAIN_DIR}/ has no {BOUNDS_FILE}, so every clip is label 0; {TRAINING_LAYOUT}"
    labels = {c.label for c in dataset.train}
    if len(labels) < 2:
        return (f"every clip in {TRAIN_DIR}/ is label {labels.pop()}: training needs clips with the phrase "
                f"(in {BOUNDS_FILE}) and clips without it")
    return ""
