"""heardet.cv: folds that keep a voice on one side, and leave-one-engine-out scores."""

from __future__ import annotations

import numpy as np
import pytest

from heardet.cv import engine_splits, folds, leave_one_engine_out


def test_grouped_folds_never_put_one_voice_on_both_sides():
    rng = np.random.default_rng(0)
    voices = [f"v{int(v)}" for v in rng.integers(0, 30, size=300)]
    labels = rng.integers(0, 2, size=300)
    splits = folds(labels, 5, seed=1, groups=voices)
    assert len(splits) == 5
    seen = np.concatenate([val for _, val in splits])
    assert sorted(seen.tolist()) == list(range(300)), "every clip is validated exactly once"
    for train, val in splits:
        shared = {voices[i] for i in train} & {voices[i] for i in val}
        assert not shared, f"voices on both sides: {sorted(shared)[:3]}"


def test_without_groups_the_folds_are_plain_stratified():
    labels = [0, 1] * 10
    plain = folds(labels, 2, seed=0)
    assert all(set(np.asarray(labels)[val].tolist()) == {0, 1} for _, val in plain)
    shared_voice = folds(labels, 2, seed=0, groups=["same"] * 20)  # fewer groups than folds: plain folds
    assert [v.tolist() for _, v in shared_voice] == [v.tolist() for _, v in plain]


def test_a_grouped_fold_with_one_label_only_is_refused_with_the_fix():
    labels = [0] * 6 + [1] * 6
    voices = ["a"] * 6 + ["b"] * 3 + ["c"] * 3  # voice a holds every negative
    with pytest.raises(ValueError, match="one label only.*lower n_folds or add voices"):
        folds(labels, 2, seed=0, groups=voices)


def test_leave_one_engine_out_trains_without_the_engine_it_scores():
    engines = ["espeak-ng"] * 4 + ["festival"] * 4
    labels = np.array([0, 1, 0, 1, 1, 0, 1, 0])
    calls = []

    def fit_predict(train, held_out):
        calls.append(({engines[i] for i in train}, {engines[i] for i in held_out}))
        return labels[held_out].astype(float)  # a perfect model

    results = leave_one_engine_out(engines, labels, fit_predict)
    assert calls == [({"festival"}, {"espeak-ng"}), ({"espeak-ng"}, {"festival"})]
    assert {k: v.macro_f1 for k, v in results.items()} == {"espeak-ng": 1.0, "festival": 1.0}


def test_one_engine_or_unknown_engines_give_no_holdout():
    assert engine_splits(["espeak-ng"] * 4) == []
    assert engine_splits([None] * 4) == []
    assert leave_one_engine_out([None] * 4, [0, 1, 0, 1], lambda a, b: np.zeros(len(b))) == {}
