"""Approach 4: an ensemble of models of the pyfunc contract, and CSV blending.

Two ways to combine members:

- ``vote``: each member votes its label; the majority wins; a tie (even member count) goes to
  the mean of the members' scores (>= 0.5 → 1).
- ``weighted``: a weighted mean of the members' scores against a threshold. A member alone is
  the one-hot case.

:func:`choose_blend` picks between them on the members' out-of-fold scores of the training
clips (every member alone, the vote, the plain and the F1-weighted means) and keeps the best,
so on those scores the ensemble is never worse than its best member (a blend must win by a
margin; otherwise that member alone is the ensemble). A member that could not
read a row (label -1) does not count on it; a row no member could read gets label -1 and the
members' errors.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from heardet.mlops.contract import (
    PHRASE_COLUMNS,
    ContractModel,
    Prediction,
    sources_from_frame,
    to_frame,
)

logger = logging.getLogger(__name__)


def member_key(uri: str, index: int) -> str:
    """A column-safe name for a member: ``vote_<index>_<model name>``."""
    name = re.sub(r"[^0-9A-Za-z]+", "_", uri.removeprefix("models:/")).strip("_").lower()
    return f"vote_{index}_{name}"[:60]


def vote(labels: np.ndarray, scores: np.ndarray, errors: Sequence[Sequence[str]]) -> list[Prediction]:
    """Majority vote.

    Args:
        labels: [members, rows] of 1/0/-1.
        scores: [members, rows] probabilities (NaN where a member failed).
        errors: per member, per row error text.
    """
    out = []
    for row in range(labels.shape[1]):
        valid = labels[:, row] >= 0
        if not valid.any():
            msg = "; ".join(sorted({e[row] for e in errors if e[row]})) or "no member could score this row"
            out.append(Prediction(-1, 0.0, msg))
            continue
        ones = int((labels[valid, row] == 1).sum())
        zeros = int(valid.sum()) - ones
        mean_score = float(np.nanmean(scores[valid, row]))
        label = 1 if ones > zeros else 0 if zeros > ones else int(mean_score >= 0.5)
        out.append(Prediction(label, mean_score))
    return out


METHODS = ("vote", "weighted")
BLEND_MARGIN = 0.01  # a blend must beat the best member alone by this much out of fold (selection noise)


def weighted(scores: np.ndarray, weights: Sequence[float], threshold: float,
             errors: Sequence[Sequence[str]]) -> list[Prediction]:
    """Weighted mean of the members' scores ``[members, rows]`` (NaN where a member failed) against ``threshold``;
    a row where every weighted member failed falls back to the plain mean of the others."""
    weights = np.asarray(weights, dtype=float)
    out = []
    for row in range(scores.shape[1]):
        valid = ~np.isnan(scores[:, row])
        if not valid.any():
            msg = "; ".join(sorted({e[row] for e in errors if e[row]})) or "no member could score this row"
            out.append(Prediction(-1, 0.0, msg))
            continue
        w = np.where(valid, weights, 0.0)
        w = w if w.sum() > 0 else valid.astype(float)
        value = float(np.nansum(w * np.nan_to_num(scores[:, row])) / w.sum())
        out.append(Prediction(int(value >= threshold), value))
    return out


@dataclass(frozen=True)
class Blend:
    """How an ensemble combines its members, and the out-of-fold macro F1 of every candidate it weighed."""

    method: str  # one of METHODS
    weights: tuple[float, ...] = ()
    threshold: float = 0.5
    candidates: tuple[tuple[str, float], ...] = ()  # (candidate, out-of-fold macro F1), best first

    @property
    def chosen(self) -> str:
        return self.candidates[0][0] if self.candidates else self.method


def choose_blend(oof: np.ndarray, labels: Sequence[int], thresholds: Sequence[float],
                 names: Sequence[str]) -> Blend:
    """The best way to combine members on their out-of-fold scores ``oof [members, rows]``.

    Candidates: each member alone (at its own threshold), the majority vote, the mean of the
    scores and the mean weighted by each member's F1 above 0.5 (both at the threshold that is
    best on all rows). A mean is judged by :func:`cross_fitted_f1`, not at the threshold picked
    on the very rows it is scored on: that arg-max flatters it against members whose thresholds
    are fixed. A blend of several members is chosen only when it beats the best member alone by
    :data:`BLEND_MARGIN`: on a few hundred clips a smaller edge is noise.
    """
    from heardet.cv import best_threshold
    from heardet.metrics import score

    labels = np.asarray(labels, dtype=int)
    oof = np.asarray(oof, dtype=float)
    m = len(oof)
    no_errors = [[""] * oof.shape[1]] * m
    options: list[tuple[str, Blend, float]] = []
    member_f1 = []
    for k in range(m):
        f1 = score(labels, (oof[k] >= thresholds[k]).astype(int)).macro_f1
        member_f1.append(f1)
        options.append((f"{names[k]} alone", Blend("weighted", tuple(float(i == k) for i in range(m)),
                                                   float(thresholds[k])), f1))
    votes = np.stack([(oof[k] >= thresholds[k]).astype(int) for k in range(m)])
    voted = [p.label for p in vote(votes, oof, no_errors)]
    options.append(("majority vote", Blend("vote"), score(labels, voted).macro_f1))
    for name, w in (("mean of scores", np.ones(m)), ("F1-weighted mean", np.maximum(np.array(member_f1) - 0.5, 0))):
        if w.sum() == 0:
            continue
        mixed = (w[:, None] * oof).sum(axis=0) / w.sum()
        options.append((name, Blend("weighted", tuple(float(x) for x in w), best_threshold(labels, mixed)),
                        cross_fitted_f1(labels, mixed)))
    best_alone = max(f for name, _, f in options[:m])

    def merit(option: tuple[str, Blend, float]) -> float:
        alone = option[0].endswith(" alone")
        return option[2] if alone or option[2] >= best_alone + BLEND_MARGIN else -1.0

    ranked = sorted(options, key=lambda o: -merit(o))  # stable: a member alone, listed first, wins ties
    best = ranked[0][1]
    return Blend(best.method, best.weights, best.threshold,
                 tuple((n, round(float(f), 6)) for n, _, f in ranked))


def cross_fitted_f1(labels: Sequence[int], scores: Sequence[float], seed: int = 0) -> float:
    """Macro F1 of ``scores`` where each half of the rows (:func:`heardet.cv.stratified_folds`, 2 folds)
    is thresholded where :func:`heardet.cv.best_threshold` puts it on the other half: what choosing a
    threshold on these scores is worth on rows the choice did not see. With fewer than two rows of
    a label there are no such halves: the in-sample macro F1 at the best threshold."""
    from heardet.cv import best_threshold, stratified_folds
    from heardet.metrics import score

    labels, scores = np.asarray(labels, dtype=int), np.asarray(scores, dtype=float)
    if min((labels == 0).sum(), (labels == 1).sum()) < 2:
        return score(labels, (scores >= best_threshold(labels, scores)).astype(int)).macro_f1
    predicted = np.zeros(len(labels), dtype=int)
    for chosen_on, scored in stratified_folds(labels, 2, seed):
        predicted[scored] = scores[scored] >= best_threshold(labels[chosen_on], scores[chosen_on])
    return score(labels, predicted).macro_f1


class EnsembleModel(ContractModel):
    """pyfunc: loads its members from ``context.artifacts`` (copies bundled at log time) and combines
    them as its :class:`Blend` says (majority vote by default).

    Adds one ``vote_<i>_<member>`` column per member and, when a member says where the phrase is
    (the fine-tune), ``phrase_start_s`` / ``phrase_end_s`` (see :func:`phrase_times`)."""

    _loaded = ("_members",)

    def __init__(self, member_uris: Sequence[str], blend: Blend | None = None):
        self.member_uris = list(member_uris)
        self.keys = [member_key(u, i) for i, u in enumerate(self.member_uris)]
        self.blend = blend or Blend("vote")
        self._members = None

    def load(self, context) -> None:
        import mlflow.pyfunc

        from heardet.mlops.store import quiet_downloads

        with quiet_downloads():  # one bar line per file of every member otherwise
            self._members = [mlflow.pyfunc.load_model(context.artifacts[key]) for key in self.keys]

    def describe(self) -> str:
        return f"EnsembleModel of {len(self.member_uris)} members ({self.blend.chosen})"

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        if self._members is None:
            self.load_context(context)
        sources, row_errors = sources_from_frame(model_input, self.policy)
        rows = [i for i, s in enumerate(sources) if s is not None]
        frame = _rows_frame([sources[i] for i in rows])
        labels = np.full((len(self._members), len(sources)), -1, dtype=int)
        scores = np.full((len(self._members), len(sources)), np.nan)
        times = np.full((len(self._members), len(sources), 2), np.nan)  # members' phrase start/end, s
        errors = [list(row_errors) for _ in self._members]
        for m, member in enumerate(self._members):
            if not rows:
                break
            out = member.predict(frame).reset_index(drop=True)
            labels[m, rows] = out["label"].astype(int).to_numpy()
            scores[m, rows] = np.where(labels[m, rows] >= 0, out["score"].astype(float).to_numpy(), np.nan)
            if set(PHRASE_COLUMNS) <= set(out.columns):
                times[m, rows] = out[list(PHRASE_COLUMNS)].astype(float).to_numpy()
            for j, i in enumerate(rows):
                errors[m][i] = str(out["error"][j] or "")
        blend = getattr(self, "blend", None) or Blend("vote")  # models logged before blends vote
        combined = (vote(labels, scores, errors) if blend.method == "vote"
                    else weighted(scores, blend.weights, blend.threshold, errors))
        extra = {k: labels[m] for m, k in enumerate(self.keys)}
        if not np.isnan(times).all():
            extra.update(zip(PHRASE_COLUMNS, phrase_times(combined, labels, times, blend).T))
        return to_frame(combined, extra)



def phrase_times(combined: Sequence[Prediction], labels: np.ndarray, times: np.ndarray, blend: Blend) -> np.ndarray:
    """Where the phrase is, ``[rows, 2]`` seconds, for rows the ensemble labels 1: the times of the
    heaviest member (by blend weight; by order for a vote) that found the phrase there and says
    where; NaN elsewhere, and where no such member does."""
    weights = np.asarray(blend.weights, dtype=float) if blend.method == "weighted" else np.ones(len(labels))
    order = sorted(range(len(labels)), key=lambda m: -weights[m])  # stable: the first member wins a tie
    out = np.full((len(combined), 2), np.nan)
    for row, prediction in enumerate(combined):
        if prediction.label != 1:
            continue
        found = next((m for m in order if labels[m, row] == 1 and np.isfinite(times[m, row]).all()), None)
        if found is not None:
            out[row] = times[found, row]
    return out


def _rows_frame(sources: list) -> pd.DataFrame:
    """The members' input: each checked source once more as a contract row (bytes as ``audio``, an
    allowed path as ``path``), so that no member reads the request's cells again."""
    columns = {"audio": [s if isinstance(s, bytes) else None for s in sources],
               "path": [s if isinstance(s, str) else None for s in sources]}
    return pd.DataFrame({name: values for name, values in columns.items() if any(v is not None for v in values)})


def blend_csvs(paths: Sequence[str | Path]) -> pd.DataFrame:
    """Majority-vote submission CSVs (``id,label``); ties go to 1 when half or more say 1.

    Raises:
        ValueError: fewer than two files, a missing column, or files whose ids differ.
    """
    if len(paths) < 2:
        raise ValueError(f"blending needs at least 2 CSV files, got {len(paths)}")
    frames = []
    for path in paths:
        frame = pd.read_csv(path, dtype={"id": str})
        missing = {"id", "label"} - set(frame.columns)
        if missing:
            raise ValueError(f"{path}: missing column(s) {sorted(missing)}; found {list(frame.columns)}")
        frames.append(frame.set_index("id")["label"].astype(int))
    ids = set(frames[0].index)
    for path, frame in zip(paths[1:], frames[1:]):
        if set(frame.index) != ids:
            extra, missing = sorted(set(frame.index) - ids)[:5], sorted(ids - set(frame.index))[:5]
            raise ValueError(f"{path}: ids differ from {paths[0]} (extra {extra}, missing {missing})")
    votes = pd.concat(frames, axis=1).loc[frames[0].index]
    label = (votes.mean(axis=1) >= 0.5).astype(int)
    return pd.DataFrame({"id": votes.index, "label": label.to_numpy()})
