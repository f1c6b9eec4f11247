"""Score files or a labelled directory with any model that follows the pyfunc contract."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd
from tqdm.auto import tqdm

from heardet.data import Clip, DataError, list_audio, load_dataset
from heardet.metrics import Scores, score

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Evaluation:
    """Scores of a model on one labelled split, with the per-clip predictions."""

    split: str
    scores: Scores
    predictions: pd.DataFrame


def load_model(uri: str):
    """``mlflow.pyfunc.load_model`` with a message that names the URI on failure.

    A ``models:/NAME…`` URI is checked first: a registry that does not exist is not created,
    and a NAME it does not hold fails with the names it does hold. MLflow's per-file
    download bars are hidden.

    Raises:
        heardet.mlops.store.StoreError: no such registry or registered model.
        DataError: any other load failure, naming the URI.
    """
    import mlflow

    from heardet.mlops.store import check_registered, quiet_downloads

    check_registered(uri)
    try:
        with quiet_downloads():
            return mlflow.pyfunc.load_model(uri)
    except Exception as exc:  # noqa: BLE001 - any load failure is reported with the URI
        raise DataError(f"cannot load model {uri!r}: {exc}") from exc


def collect_files(inputs: Sequence[str | Path]) -> list[Path]:
    """Audio files named directly or found (non-recursively) in named directories.

    A file named directly is kept whatever its extension (a missing or unreadable one is
    reported per row by the model); a directory contributes its audio files (by extension).
    """
    files: list[Path] = []
    for item in map(Path, inputs):
        files.extend(list_audio(item) if item.is_dir() else [item])
    return files


def empty_directories(inputs: Sequence[str | Path]) -> list[Path]:
    """The directories among ``inputs`` that hold no audio file."""
    return [item for item in map(Path, inputs) if item.is_dir() and not list_audio(item)]


def predict_files(model, files: Sequence[Path], batch_size: int = 16, progress: bool = True) -> pd.DataFrame:
    """Run ``model`` over ``files`` in batches; one row per file: id, path, label, score, error
    (plus any extra columns the model returns, e.g. ensemble votes)."""
    parts = []
    with tqdm(total=len(files), desc="predict", unit="clip", disable=not progress) as bar:
        for start in range(0, len(files), batch_size):
            chunk = [str(p) for p in files[start : start + batch_size]]
            out = model.predict(pd.DataFrame({"path": chunk}))
            parts.append(out.reset_index(drop=True).assign(path=chunk))
            bar.update(len(chunk))
    if not parts:
        return pd.DataFrame(columns=["id", "path", "label", "score", "error"])
    frame = pd.concat(parts, ignore_index=True)
    frame.insert(0, "id", [Path(p).stem for p in frame.path])
    return frame[["id", "path", "label", "score", "error"] + [c for c in frame.columns
                                                                if c not in ("id", "path", "label", "score", "error")]]


def labelled_split(data_dir: str | Path, split: str = "auto") -> tuple[str, tuple[Clip, ...]]:
    """The clips of a labelled split of ``data_dir``: ``wav_test/`` + ``test_labels.csv`` or
    ``wav_train/`` + ``word_bounds.json`` (``split='auto'`` prefers a labelled test split).

    Raises:
        DataError: no such directory, or the split has no clips or no labels.
    """
    dataset = load_dataset(data_dir)
    if split == "auto":
        split = "test" if dataset.test_labelled else "train"
    clips = dataset.split(split)
    if not clips or any(c.label is None for c in clips):
        raise DataError(
            f"{data_dir}: split {split!r} is not labelled (need wav_test/ + test_labels.csv, "
            "or wav_train/ + word_bounds.json)"
        )
    return split, clips


def evaluate_dir(model, data_dir: str | Path, split: str = "auto", batch_size: int = 16,
                 progress: bool = True) -> Evaluation:
    """Score a labelled directory (see :func:`labelled_split`)."""
    return evaluate_clips(model, *labelled_split(data_dir, split), batch_size=batch_size, progress=progress)


def evaluate_clips(model, split: str, clips: Sequence[Clip], batch_size: int = 16,
                   progress: bool = True) -> Evaluation:
    """Score labelled clips; an unreadable clip (label -1) counts as a wrong prediction."""
    predictions = predict_files(model, [c.path for c in clips], batch_size, progress)
    predictions.insert(2, "true_label", [c.label for c in clips])
    return Evaluation(split, score(predictions.true_label, predictions.label), predictions)
