"""Cross-validation shared by the CatBoost and fine-tune approaches: folds grouped by voice, and engine hold-outs.

A fold that shares voices with its training folds flatters the model (it learns the voice, not the
words). :func:`folds` keeps each group (a voice, from the synth manifest) inside one fold; data
without groups falls back to plain stratified folds. :func:`engine_splits` gives the
leave-one-engine-out splits: train on every other engine, score this one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

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


def folds(labels: Sequence[int], n_folds: int, seed: int,
          groups: Sequence[str] | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n_folds`` splits that never put one group (e.g. a voice) on both sides, stratified by label.

    Without ``groups`` (or with fewer distinct groups than folds) these are :func:`stratified_folds`.

    Raises:
        ValueError: as :func:`stratified_folds`, or a fold that gets no clip of a label.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    plain = stratified_folds(labels, n_folds, seed)  # checks the counts in any case
    if not is_grouped(groups, n_folds):
        return plain
    labels = np.asarray(labels, dtype=int)
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    result = list(splitter.split(np.zeros(len(labels)), labels, np.asarray(groups)))
    for k, (_, val) in enumerate(result):
        if len(set(labels[val].tolist())) < 2:
            raise ValueError(f"grouped fold {k} holds clips of one label only ({len(val)} clips): too few groups "
                             f"({len(set(groups))}) for {n_folds} folds; lower n_folds or add voices")
    return result


def is_grouped(groups: Sequence[str] | None, n_folds: int) -> bool:
    """Whether :func:`folds` groups by ``groups`` (enough distinct groups for the folds), or falls back."""
    return groups is not None and len(set(groups)) >= n_folds


def engine_splits(engines: Sequence[str | None] | None) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Leave-one-engine-out: ``(engine, train rows, held-out rows)`` per engine; empty with fewer than two
    engines, or with ``engines`` None (data that does not name them)."""
    engines = np.asarray([e or "" for e in engines or ()])
    names = sorted(set(engines.tolist()) - {""})
    if len(names) < 2:
        return []
    return [(name, np.flatnonzero((engines != name) & (engines != "")), np.flatnonzero(engines == name))
            for name in names]


def leave_one_engine_out(engines: Sequence[str | None] | None, labels: Sequence[int],
                         fit_predict: Callable[[np.ndarray, np.ndarray], np.ndarray],
                         threshold: float = 0.5) -> dict[str, Scores]:
    """Train on every other engine and score each engine's clips: ``{engine: Scores}``.

    ``fit_predict(train_rows, held_out_rows)`` trains a fresh model on ``train_rows`` and returns
    the phrase probability of each held-out row. An engine whose complement lacks a label is skipped.
    """
    labels = np.asarray(labels, dtype=int)
    results = {}
    for name, train_rows, held_out in engine_splits(engines):
        if len(set(labels[train_rows].tolist())) < 2 or not len(held_out):
            continue
        probs = np.asarray(fit_predict(train_rows, held_out), dtype=float)
        results[name] = score(labels[held_out], (probs >= threshold).astype(int))
    return results


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
