"""What every entry point logs the same way: its run, evaluations, plots, fold metrics, and the
test split scored through the model it just logged (one scoring path for every approach)."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from heardet.cv import CVResult
from heardet.data import Dataset
from heardet.metrics import Scores, score
from heardet.mlops import plots

logger = logging.getLogger(__name__)


def log_evaluation(split: str, labels: Sequence[int], predictions: Sequence[int], title: str = "") -> Scores:
    """Score one labelled split; log ``<split>_macro_f1`` etc. and ``plots/confusion_<split>.png``."""
    import mlflow

    scores = score(labels, predictions)
    mlflow.log_metrics(scores.as_metrics(f"{split}_"))
    mlflow.log_figure(plots.confusion(scores, f"{title} {split}".strip()), f"plots/confusion_{split}.png")
    logger.info("%s %s: %s", title, split, scores.render())
    return scores


def log_cv(cv: CVResult, prefix: str = "cv_", labels: Sequence[int] | None = None,
           grouped: bool | None = None) -> None:
    """Per-fold macro F1 with ``step=fold``, plus mean, std, OOF threshold and a fold bar chart;
    with the training ``labels``, also ROC and precision-recall curves of the out-of-fold scores
    (``plots/oof_roc_pr.png``) and ``<prefix>oof_roc_auc``; ``grouped`` is logged as the tag
    ``cv_folds`` (``voice-grouped`` or ``stratified``)."""
    import mlflow

    if grouped is not None:
        mlflow.set_tag("cv_folds", "voice-grouped" if grouped else "stratified")

    for fold, f1 in enumerate(cv.fold_f1):
        mlflow.log_metric(f"{prefix}fold_macro_f1", f1, step=fold)
    for name, values in cv.extra.items():
        if len(values) != len(cv.fold_f1) or not all(isinstance(v, (int, float)) for v in values):
            continue  # per-fold numbers only (not ids, models, ...)
        for fold, value in enumerate(values):
            mlflow.log_metric(f"{prefix}fold_{name}", float(value), step=fold)
    mlflow.log_metrics({f"{prefix}macro_f1_mean": cv.mean_f1, f"{prefix}macro_f1_std": cv.std_f1,
                        f"{prefix}threshold": cv.threshold})
    mlflow.log_figure(plots.fold_f1(cv), "plots/fold_f1.png")
    if labels is not None and len(set(np.asarray(labels).tolist())) == 2:
        figure, auc = plots.roc_pr(labels, cv.oof_score)
        mlflow.log_metric(f"{prefix}oof_roc_auc", auc)
        mlflow.log_figure(figure, "plots/oof_roc_pr.png")


def log_engine_holdout(results: Mapping[str, Scores]) -> None:
    """Leave-one-engine-out macro F1 (:func:`heardet.cv.leave_one_engine_out`): ``loeo_macro_f1_<engine>``
    per held-out engine and ``loeo_macro_f1_mean``; nothing when the data has one engine."""
    import mlflow

    if not results:
        logger.info("leave-one-engine-out: skipped (the data names fewer than two engines)")
        return
    for engine, scores in results.items():
        mlflow.log_metric(f"loeo_macro_f1_{engine}", scores.macro_f1)
        logger.info("leave-one-engine-out: trained without %s, macro F1 on it %.4f", engine, scores.macro_f1)
    mlflow.log_metric("loeo_macro_f1_mean", float(np.mean([s.macro_f1 for s in results.values()])))


def write_submission(ids: Sequence[str], labels: Sequence[int], path: str | Path) -> Path:
    """Write the competition's ``id,label`` CSV."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"id": list(ids), "label": np.asarray(labels, dtype=int)}).to_csv(path, index=False)
    return path


def log_submission(ids: Sequence[str], labels: Sequence[int], filename: str, out_dir: str | Path) -> Path:
    """Write ``out_dir/filename`` and log it as an artifact under ``submission/``."""
    import mlflow

    path = write_submission(ids, labels, Path(out_dir) / filename)
    mlflow.log_artifact(str(path), "submission")
    logger.info("wrote %s (%d rows)", path, len(ids))
    return path


def log_params(params: dict) -> None:
    """Log what the run actually uses; keys ``mlflow run`` logged already are checked, not logged again.

    ``mlflow run`` logs every MLproject parameter (defaults included, values shell-quoted) before
    the entry point starts, and MLflow never lets a parameter change. So a key it logged must
    hold the value the run uses, however spelled (``5`` and ``5.0``, a path and its absolute
    form, ``'не слышу'`` and не слышу); anything an entry point may change, such as values taken
    from a tune run, is kept out of the MLproject's declared parameters.

    Raises:
        ValueError: a key already logged with a different value.
    """
    import mlflow

    run = mlflow.active_run()
    existing = mlflow.get_run(run.info.run_id).data.params if run else {}
    conflicts = [f"{k}: logged {existing[k]!r}, used {v!r}" for k, v in params.items()
                 if k in existing and not same_param(existing[k], v)]
    if conflicts:
        raise ValueError("the run's parameters would not say what it used (" + "; ".join(conflicts) + ")")
    mlflow.log_params({k: v for k, v in params.items() if k not in existing})


def logged_value(logged: str) -> str:
    """A parameter value as given to ``mlflow run``, which logs it shell-quoted (``'не слышу'``, ``''``)."""
    import shlex

    try:
        words = shlex.split(logged)
    except ValueError:  # not valid shell quoting: logged as is
        return logged
    return words[0] if len(words) == 1 else "" if not words else logged


def same_param(logged: str, value: object) -> bool:
    """Whether a parameter value ``mlflow run`` logged spells ``value``."""
    import os

    logged = logged_value(logged)
    text = "" if value is None else str(value)
    if logged == text or logged.lower() == text.lower() and text.lower() in ("true", "false"):
        return True
    try:
        return float(logged) == float(text)
    except ValueError:
        pass
    return bool(logged) and bool(text) and os.path.abspath(logged) == os.path.abspath(text)


@contextlib.contextmanager
def stage_run(approach: str, name: str) -> Iterator:
    """The entry point's MLflow run (the one ``mlflow run`` opened, or a new one), tagged
    ``approach`` and named ``name`` (e.g. ``finetune whisper-base 5-fold``) for the UI."""
    import mlflow

    with mlflow.start_run() as run:
        mlflow.set_tags({"approach": approach, "mlflow.runName": name})
        yield run


@dataclass(frozen=True)
class TestSplit:
    """The test split as the logged model scored it.

    Attributes:
        predictions: one row per clip: id, path, label (-1 unreadable), score, error, and any
            extra columns the model returns (e.g. ensemble votes).
        scores: macro F1 etc. when the split is labelled, else None.
        unreadable: (clip id, error) of the clips the model could not read.
        submission: the ``id,label`` CSV written (unreadable clips as 0).
        seconds: wall time of the scoring.
    """

    predictions: pd.DataFrame
    scores: Scores | None
    unreadable: list[tuple[str, str]]
    submission: Path
    seconds: float


def localisation_errors(predictions: pd.DataFrame, dataset: Dataset) -> np.ndarray:
    """For each clip with phrase bounds that the model found (label 1, ``phrase_start_s`` given), the
    larger of its start and end errors against the nearest bound, seconds."""
    if "phrase_start_s" not in predictions:
        return np.zeros(0)
    bounds = {c.id: c.bounds for c in dataset.test if c.bounds}
    errors = []
    for row in predictions.itertuples():
        if row.label == 1 and row.id in bounds and np.isfinite(row.phrase_start_s):
            errors.append(min(max(abs(row.phrase_start_s - s), abs(row.phrase_end_s - e)) for s, e in bounds[row.id]))
    return np.asarray(errors)


def log_localisation(predictions: pd.DataFrame, dataset: Dataset) -> None:
    """``test_localisation_median_error_s`` / ``_p90_error_s`` / ``_n`` for a model that says where the phrase is."""
    import mlflow

    errors = localisation_errors(predictions, dataset)
    if len(errors):
        mlflow.log_metrics({"test_localisation_median_error_s": float(np.median(errors)),
                            "test_localisation_p90_error_s": float(np.percentile(errors, 90)),
                            "test_localisation_n": len(errors)})
        logger.info("localisation on %d found phrases: median error %.3f s, 90th percentile %.3f s",
                    len(errors), np.median(errors), np.percentile(errors, 90))


def log_test_split(model_uri: str, dataset: Dataset, filename: str, out_dir: str | Path,
                   title: str, progress: bool = True) -> TestSplit | None:
    """Score ``wav_test`` by reloading the model just logged at ``model_uri``, as a user would.

    Logs ``test_*`` metrics and the confusion matrix when the split is labelled,
    ``test_unreadable`` (with ``submission/unreadable.csv`` listing them, and a warning),
    ``test_seconds`` and ``test_x_real_time``, and writes the submission ``out_dir/filename``
    (also logged under ``submission/``). Returns None when there is no test split.
    """
    import mlflow

    from heardet.audio import audio_info
    from heardet.mlops.scoring import load_model, predict_files

    if not dataset.test:
        return None
    model = load_model(model_uri)
    started = time.perf_counter()
    predictions = predict_files(model, [c.path for c in dataset.test], progress=progress)
    seconds = time.perf_counter() - started
    bad = predictions[predictions.label < 0]
    unreadable = list(zip(bad.id, bad.error))
    audio_s = sum(audio_info(p)[0] for p in predictions.path[predictions.label >= 0])
    mlflow.log_metrics({"test_unreadable": len(unreadable), "test_seconds": seconds,
                        "test_x_real_time": audio_s / max(seconds, 1e-9)})
    if unreadable:
        mlflow.log_text(bad[["id", "error"]].to_csv(index=False), "submission/unreadable.csv")
        logger.warning("%d test clip(s) could not be read (label 0 in %s): %s", len(unreadable), filename,
                       "; ".join(f"{i}: {e}" for i, e in unreadable[:5]))
    scores = None
    if dataset.test_labelled:
        scores = log_evaluation("test", [c.label for c in dataset.test], predictions.label, title)
        log_localisation(predictions, dataset)
    submission = log_submission(predictions.id, predictions.label.clip(lower=0), filename, out_dir)
    return TestSplit(predictions, scores, unreadable, submission, seconds)
