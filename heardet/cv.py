"""Stratified k-fold cross-validation shared by the CatBoost and fine-tune approaches."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from heardet.metrics import Scores, score


@dataclass(frozen=True)
class CVResult:
    """Per-fold scores and out-of-fold predictions.

    Attributes:
        fold_scores: one :class:`Scores` per fold, in fold order.
        oof_score: out-of-fold probability of the phrase for every training row.
        threshold: decision threshold chosen on the out-of-fold scores (max macro F1).
        extra: approach-specific per-fold facts (e.g. best iteration, seconds).
    """

    fold_scores: tuple[Scores, ...]
    oof_score: np.ndarray
    threshold: float = 0.5
    extra: dict[str, list] = field(default_factory=dict)

    @property
    def fold_f1(self) -> list[float]:
        return [s.macro_f1 for s in self.fold_scores]

    @property
    def mean_f1(self) -> float:
        return float(np.mean(self.fold_f1))

    @property
    def std_f1(self) -> float:
        return float(np.std(self.fold_f1))


def stratified_folds(labels: Sequence[int], n_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``StratifiedKFold(n_folds, shuffle=True, random_state=seed)`` splits, checked first.

    Raises:
        ValueError: fewer than 2 folds, or a class with fewer members than folds.
    """
    from sklearn.model_selection import StratifiedKFold

    labels = np.asarray(labels, dtype=int)
    if n_folds < 2:
        raise ValueError(f"n_folds must be >= 2, got {n_folds}")
    counts = {int(c): int((labels == c).sum()) for c in (0, 1)}
    if min(counts.values()) < n_folds:
        raise ValueError(
            f"n_folds={n_folds} needs at least {n_folds} clips of each label; found {counts} "
            "(lower n_folds or add data)"
        )
    splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(labels)), labels))


def best_threshold(labels: Sequence[int], scores: Sequence[float]) -> float:
    """The threshold on ``scores`` that maximises macro F1 (midpoint between neighbours)."""
    labels = np.asarray(labels, dtype=int)
    scores = np.asarray(scores, dtype=float)
    candidates = np.unique(scores)
    if len(candidates) < 2:
        return 0.5
    mids = np.concatenate([(candidates[:-1] + candidates[1:]) / 2, [0.5]])
    f1 = [score(labels, (scores >= t).astype(int)).macro_f1 for t in mids]
    return float(mids[int(np.argmax(f1))])
