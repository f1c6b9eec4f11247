import numpy as np

from heardet.approaches.catboost import (
    CatBoostConfig,
    cross_validate,
    fit_final,
    predict_proba,
)


def test_catboost_learns_the_phrase_from_transcripts():
    texts = ["алло я вас не слышу", "не слышу совсем", "да слышу хорошо", "я вас слышу"] * 5
    labels = [1, 1, 0, 0] * 5
    config = CatBoostConfig(n_folds=2, iterations=100, early_stopping_rounds=50)
    cv = cross_validate(texts, labels, config, progress=False)
    assert cv.mean_f1 == 1.0, cv.fold_f1
    model = fit_final(texts, labels, config, iterations=50)
    probs = predict_proba(model, ["ничего не слышу", "слышу"])
    assert probs[0] > 0.5 > probs[1]


def test_empty_or_one_word_transcripts_do_not_break_training():
    texts = ["", "", "да", "", "", "нет"] * 2
    cv = cross_validate(texts, [0, 1] * 6, CatBoostConfig(n_folds=2, iterations=20), progress=False)
    assert len(cv.fold_f1) == 2 and np.all((cv.oof_score >= 0) & (cv.oof_score <= 1))
