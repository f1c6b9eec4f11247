"""What every entry point logs the same way: evaluations, plots, submissions, fold metrics."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from heardet.cv import CVResult
from heardet.metrics import Scores, plot_confusion, score

logger = logging.getLogger(__name__)


def log_evaluation(split: str, labels: Sequence[int], predictions: Sequence[int], title: str = "") -> Scores:
    """Score one labelled split; log ``<split>_macro_f1`` etc. and ``plots/confusion_<split>.png``."""
    import mlflow

    scores = score(labels, predictions)
    mlflow.log_metrics(scores.as_metrics(f"{split}_"))
    with tempfile.TemporaryDirectory() as tmp:
        png = plot_confusion(scores, Path(tmp) / f"confusion_{split}.png", f"{title} {split}".strip())
        mlflow.log_artifact(str(png), "plots")
    logger.info("%s %s: %s", title, split, scores.render())
    return scores


def log_cv(cv: CVResult, prefix: str = "cv_", labels: Sequence[int] | None = None) -> None:
    """Per-fold macro F1 with ``step=fold``, plus mean, std, OOF threshold and a fold bar chart;
    with the training ``labels``, also ROC and precision-recall curves of the out-of-fold scores
    (``plots/oof_roc_pr.png``) and ``<prefix>oof_roc_auc``."""
    import mlflow

    for fold, f1 in enumerate(cv.fold_f1):
        mlflow.log_metric(f"{prefix}fold_macro_f1", f1, step=fold)
    for name, values in cv.extra.items():
        if len(values) != len(cv.fold_f1) or not all(isinstance(v, (int, float)) for v in values):
            continue  # per-fold numbers only (not ids, models, ...)
        for fold, value in enumerate(values):
            mlflow.log_metric(f"{prefix}fold_{name}", float(value), step=fold)
    mlflow.log_metrics({f"{prefix}macro_f1_mean": cv.mean_f1, f"{prefix}macro_f1_std": cv.std_f1,
                        f"{prefix}threshold": cv.threshold})
    with tempfile.TemporaryDirectory() as tmp:
        mlflow.log_artifact(str(plot_folds(cv, Path(tmp) / "fold_f1.png")), "plots")
        if labels is not None and len(set(np.asarray(labels).tolist())) == 2:
            auc = plot_roc_pr(labels, cv.oof_score, Path(tmp) / "oof_roc_pr.png")
            mlflow.log_metric(f"{prefix}oof_roc_auc", auc)
            mlflow.log_artifact(str(Path(tmp) / "oof_roc_pr.png"), "plots")


def plot_roc_pr(labels: Sequence[int], scores: Sequence[float], path: Path) -> float:
    """ROC and precision-recall curves side by side; returns the ROC AUC."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

    fpr, tpr, _ = roc_curve(labels, scores)
    precision, recall, _ = precision_recall_curve(labels, scores)
    auc, ap = float(roc_auc_score(labels, scores)), float(average_precision_score(labels, scores))
    fig, (left, right) = plt.subplots(1, 2, figsize=(7, 3.2), dpi=120)
    left.plot(fpr, tpr, label=f"AUC {auc:.3f}")
    left.plot([0, 1], [0, 1], color="grey", linestyle=":")
    left.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (out of fold)")
    right.plot(recall, precision, label=f"AP {ap:.3f}")
    right.set(xlabel="recall", ylabel="precision", title="precision-recall (out of fold)", ylim=(0, 1.05))
    for ax in (left, right):
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return auc


def plot_folds(cv: CVResult, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 3), dpi=120)
    ax.bar(range(len(cv.fold_f1)), cv.fold_f1, color="tab:blue")
    ax.axhline(cv.mean_f1, color="black", linestyle="--", label=f"mean {cv.mean_f1:.3f} ± {cv.std_f1:.3f}")
    ax.set_xlabel("fold")
    ax.set_ylabel("macro F1")
    ax.set_ylim(0, 1.05)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


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
    """``mlflow.log_params`` for keys the run does not have yet.

    ``mlflow run`` has already logged the entry point's parameters as typed (quoted, for
    values with spaces); logging them again with another spelling would be an error.
    """
    import mlflow

    run = mlflow.active_run()
    existing = mlflow.get_run(run.info.run_id).data.params if run else {}
    mlflow.log_params({k: v for k, v in params.items() if k not in existing})
