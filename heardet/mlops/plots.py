"""Every chart heardet draws, as a ``matplotlib.figure.Figure``.

No pyplot and no backend switch: a Figure made this way renders with the Agg canvas whatever
the caller's backend is, so a notebook user keeps theirs. Save with ``fig.savefig(path)`` or
log with ``mlflow.log_figure(fig, "plots/name.png")``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from heardet.cv import CVResult
from heardet.metrics import Scores

DPI = 120


def _figure(width: float, height: float, ncols: int = 1):
    fig = Figure(figsize=(width, height), dpi=DPI)
    axes = fig.subplots(1, ncols)
    return fig, axes


def confusion(scores: Scores, title: str = "") -> Figure:
    """The 2×2 confusion matrix with counts, titled with the macro F1."""
    fig, ax = _figure(3.6, 3.2)
    cm = np.array(scores.confusion)
    ax.imshow(cm, cmap="Blues")
    for (i, j), value in np.ndenumerate(cm):
        ax.text(j, i, str(value), ha="center", va="center", color="white" if value > cm.max() / 2 else "black")
    ax.set_xticks([0, 1], ["0", "1"])
    ax.set_yticks([0, 1], ["0", "1"])
    ax.set(xlabel="predicted", ylabel="true")
    ax.set_title(f"{title}\nmacro F1 {scores.macro_f1:.3f}".strip(), fontsize=9)
    fig.tight_layout()
    return fig


def fold_f1(cv: CVResult) -> Figure:
    """Macro F1 per fold, with the mean ± std."""
    fig, ax = _figure(4, 3)
    ax.bar(range(len(cv.fold_f1)), cv.fold_f1, color="tab:blue")
    ax.axhline(cv.mean_f1, color="black", linestyle="--", label=f"mean {cv.mean_f1:.3f} ± {cv.std_f1:.3f}")
    ax.set(xlabel="fold", ylabel="macro F1", ylim=(0, 1.05))
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def roc_pr(labels: Sequence[int], scores: Sequence[float], what: str = "out of fold") -> tuple[Figure, float]:
    """ROC and precision-recall curves side by side; returns the figure and the ROC AUC."""
    from sklearn.metrics import (
        average_precision_score,
        precision_recall_curve,
        roc_auc_score,
        roc_curve,
    )

    fpr, tpr, _ = roc_curve(labels, scores)
    precision, recall, _ = precision_recall_curve(labels, scores)
    auc, ap = float(roc_auc_score(labels, scores)), float(average_precision_score(labels, scores))
    fig, (left, right) = _figure(7, 3.2, ncols=2)
    left.plot(fpr, tpr, label=f"AUC {auc:.3f}")
    left.plot([0, 1], [0, 1], color="grey", linestyle=":")
    left.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC ({what})")
    right.plot(recall, precision, label=f"AP {ap:.3f}")
    right.set(xlabel="recall", ylabel="precision", title=f"precision-recall ({what})", ylim=(0, 1.05))
    for ax in (left, right):
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig, auc


def approaches(names: Sequence[str], cv_f1: Sequence[float | None], test_f1: Sequence[float | None]) -> Figure:
    """CV and test macro F1 per approach, side by side (a missing value draws no bar)."""
    fig, ax = _figure(6, 3.2)
    x = np.arange(len(names))
    ax.bar(x - 0.2, [v or 0 for v in cv_f1], 0.4, label="CV")
    ax.bar(x + 0.2, [v or 0 for v in test_f1], 0.4, label="test")
    ax.set_xticks(x, list(names))
    ax.set(ylabel="macro F1", ylim=(0, 1.05))
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def optimization_history(numbers: Sequence[int], values: Sequence[float], metric: str) -> Figure:
    """Each complete trial's objective value, and the best so far."""
    fig, ax = _figure(7, 4.5)
    ax.scatter(numbers, values, color="tab:blue", label="trial")
    ax.step(numbers, np.maximum.accumulate(np.asarray(values, dtype=float)), where="post", color="tab:red",
            label="best so far")
    ax.set(xlabel="trial", ylabel=metric, title="optimisation history")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def intermediate_values(curves: dict[int, dict[int, float]]) -> Figure:
    """Per trial, the value reported after each fold (``{trial: {fold: value}}``)."""
    fig, ax = _figure(7, 4.5)
    for number, values in sorted(curves.items()):
        steps = sorted(values)
        ax.plot(steps, [values[s] for s in steps], marker="o", label=f"trial {number}")
    ax.set(xlabel="fold", ylabel="macro F1", title="intermediate values")
    if len(curves) <= 12:
        ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    return fig


def importances(importance: dict[str, float]) -> Figure:
    """Parameter importances as horizontal bars."""
    fig, ax = _figure(7, 4.5)
    names = sorted(importance, key=importance.get)
    ax.barh(names, [importance[n] for n in names], color="tab:green")
    ax.set(xlabel="importance", title="parameter importances")
    fig.tight_layout()
    return fig


def det(fa_per_hour: Sequence[float], miss_rate: Sequence[float], title: str = "") -> Figure:
    """A DET curve of whole-call scanning: miss rate against false accepts per hour (log scale; 0 FA/h
    is drawn at 0.01), one point per threshold."""
    fig, ax = _figure(5.0, 4.0)
    ax.plot([max(v, 1e-2) for v in fa_per_hour], miss_rate, marker=".", lw=1)
    ax.set_xscale("log")
    ax.set(xlabel="false accepts per hour", ylabel="miss rate (1 - event recall)", ylim=(-0.02, 1.02))
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title or "misses vs false accepts per hour", fontsize=9)
    fig.tight_layout()
    return fig
