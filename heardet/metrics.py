"""Classification metrics and the plots that go with them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class Scores:
    """Binary classification metrics; ``confusion`` is [[tn, fp], [fn, tp]]."""

    macro_f1: float
    accuracy: float
    precision: float
    recall: float
    n: int
    confusion: tuple[tuple[int, int], tuple[int, int]]

    def as_metrics(self, prefix: str = "") -> dict[str, float]:
        """Flat dict for ``mlflow.log_metrics``."""
        return {f"{prefix}{k}": float(getattr(self, k)) for k in ("macro_f1", "accuracy", "precision", "recall")}

    def render(self) -> str:
        (tn, fp), (fn, tp) = self.confusion
        return (
            f"macro_f1 {self.macro_f1:.4f}  accuracy {self.accuracy:.4f}  precision {self.precision:.4f}  "
            f"recall {self.recall:.4f}  (n={self.n})\n"
            f"confusion (rows true 0/1, cols predicted 0/1):\n  [[{tn:5d} {fp:5d}]\n   [{fn:5d} {tp:5d}]]"
        )


def log_loss(y_true: Sequence[int], probs: Sequence[float]) -> float:
    """Mean binary cross-entropy of phrase probabilities (clipped to [1e-7, 1 - 1e-7])."""
    y = np.asarray(y_true, dtype=float)
    p = np.clip(np.asarray(probs, dtype=float), 1e-7, 1 - 1e-7)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def score(y_true: Sequence[int], y_pred: Sequence[int]) -> Scores:
    """Macro F1, accuracy, precision and recall of the positive class, confusion matrix.

    Rows whose prediction is -1 (audio could not be read) count as wrong predictions.
    """
    from sklearn.metrics import (
        accuracy_score,
        confusion_matrix,
        f1_score,
        precision_score,
        recall_score,
    )

    y_true = np.asarray(y_true, dtype=int)
    y_pred = np.asarray(y_pred, dtype=int)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"{len(y_true)} labels but {len(y_pred)} predictions")
    if len(y_true) == 0:
        raise ValueError("cannot score an empty set")
    y_pred = np.where(y_pred < 0, 1 - y_true, y_pred)  # unreadable -> counted as a mistake
    cm = confusion_matrix(y_true, y_pred, labels=[0, 1])
    return Scores(
        macro_f1=float(f1_score(y_true, y_pred, average="macro", labels=[0, 1], zero_division=0)),
        accuracy=float(accuracy_score(y_true, y_pred)),
        precision=float(precision_score(y_true, y_pred, zero_division=0)),
        recall=float(recall_score(y_true, y_pred, zero_division=0)),
        n=int(len(y_true)),
        confusion=((int(cm[0, 0]), int(cm[0, 1])), (int(cm[1, 0]), int(cm[1, 1]))),
    )
