"""Approach 2: CatBoost on the transcript text (``text_features=['text']``), k-fold, and its pyfunc."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from heardet.approaches.rule import normalize
from heardet.approaches.transcribed import TranscribingModel
from heardet.config import is_int, is_number, one_of, setting, validate
from heardet.cv import CVResult, best_threshold, folds, leave_one_engine_out
from heardet.metrics import Scores, score

logger = logging.getLogger(__name__)

EVAL_METRICS = ("Accuracy", "Logloss", "AUC", "F1", "TotalF1", "BalancedAccuracy")


@dataclass(frozen=True)
class CatBoostConfig:
    """CatBoost settings; defaults follow the original recipe (10000 iterations, Accuracy),
    with early stopping on each fold's validation part.

    Attributes:
        n_folds: StratifiedKFold splits.
        iterations: maximum boosting rounds.
        eval_metric: CatBoost metric used for early stopping and model choice.
        early_stopping_rounds: rounds without improvement before a fold stops.
        learning_rate: None lets CatBoost choose.
        depth: tree depth.
        seed: fold shuffling and CatBoost's random seed.
        thread_count: CPU threads (-1: all).
    """

    n_folds: int = setting(5, "an integer >= 2", is_int(2))
    iterations: int = setting(10_000, "an integer >= 1", is_int(1))
    eval_metric: str = setting("Accuracy", " or ".join(EVAL_METRICS), one_of(*EVAL_METRICS))
    early_stopping_rounds: int = setting(300, "an integer >= 1", is_int(1))
    learning_rate: float | None = setting(None, "None (CatBoost chooses) or a number in (0, 1]",
                                          lambda v: v is None or is_number(0, 1, low_open=True)(v))
    depth: int = setting(6, "an integer in [1, 16]", lambda v: is_int(1)(v) and v <= 16)
    seed: int = setting(42, "an integer >= 0", is_int(0))
    thread_count: int = setting(-1, "-1 (all cores) or an integer >= 1", lambda v: is_int(-1)(v) and v != 0)

    def __post_init__(self) -> None:
        validate(self)


START, END = "_start_", "_end_"  # sentence bounds: every text has a bigram, even an empty one
# Words and word pairs seen at least once: CatBoost's default bounds leave the dictionary empty
# (an error) on small datasets or on transcripts that share few words.
TEXT_PROCESSING = {
    "tokenizers": [{"tokenizer_id": "Space", "separator_type": "ByDelimiter", "delimiter": " "}],
    "dictionaries": [
        {"dictionary_id": "Word", "gram_order": "1", "occurrence_lower_bound": "1", "max_dictionary_size": "50000"},
        {"dictionary_id": "BiGram", "gram_order": "2", "occurrence_lower_bound": "1", "max_dictionary_size": "50000"},
    ],
    "feature_processing": {"default": [{"dictionaries_names": ["Word", "BiGram"], "feature_calcers": ["BoW", "NaiveBayes"],
                                        "tokenizers_names": ["Space"]}]},
}


def text_frame(texts: Sequence[str]) -> pd.DataFrame:
    """The single text feature CatBoost sees: normalised, after a start token."""
    return pd.DataFrame({"text": [f"{START} {normalize(t)} {END}".replace("  ", " ") for t in texts]})


def _classifier(config: CatBoostConfig, iterations: int | None = None):
    from catboost import CatBoostClassifier

    return CatBoostClassifier(
        iterations=iterations or config.iterations,
        eval_metric=config.eval_metric,
        learning_rate=config.learning_rate,
        depth=config.depth,
        random_seed=config.seed,
        thread_count=config.thread_count,
        text_features=["text"],
        text_processing=TEXT_PROCESSING,
        verbose=False,
        allow_writing_files=False,
    )


def cross_validate(texts: Sequence[str], labels: Sequence[int], config: CatBoostConfig,
                   progress: bool = True, groups: Sequence[str] | None = None) -> CVResult:
    """k-fold CatBoost with early stopping, folds grouped by ``groups`` (voices) when given
    (:func:`heardet.cv.folds`); returns fold scores and OOF probabilities."""
    labels = np.asarray(labels, dtype=int)
    features = text_frame(texts)
    oof = np.zeros(len(labels))
    fold_scores, best_iterations, seconds = [], [], []
    splits = folds(labels, config.n_folds, config.seed, groups)
    for fold, (train_idx, val_idx) in enumerate(tqdm(splits, desc="catboost folds", disable=not progress)):
        start = time.perf_counter()
        model = _classifier(config)
        model.fit(
            features.iloc[train_idx], labels[train_idx],
            eval_set=(features.iloc[val_idx], labels[val_idx]),
            early_stopping_rounds=config.early_stopping_rounds,
            use_best_model=True,
        )
        oof[val_idx] = model.predict_proba(features.iloc[val_idx])[:, 1]
        fold_scores.append(score(labels[val_idx], (oof[val_idx] >= 0.5).astype(int)))
        best_iterations.append(int(model.get_best_iteration() or 0) + 1)
        seconds.append(time.perf_counter() - start)
        logger.info("fold %d: macro F1 %.4f, best iteration %d", fold, fold_scores[-1].macro_f1, best_iterations[-1])
    return CVResult(tuple(fold_scores), oof, best_threshold(labels, oof),
                    {"best_iteration": best_iterations, "seconds": seconds})


def fit_final(texts: Sequence[str], labels: Sequence[int], config: CatBoostConfig, iterations: int):
    """Refit on all labelled rows for ``iterations`` rounds (the folds' median best iteration)."""
    model = _classifier(config, iterations=max(1, iterations))
    model.fit(text_frame(texts), np.asarray(labels, dtype=int))
    return model


def engine_holdout(texts: Sequence[str], labels: Sequence[int], engines: Sequence[str] | None,
                   config: CatBoostConfig, iterations: int, threshold: float) -> dict[str, Scores]:
    """Leave-one-engine-out macro F1 (:func:`heardet.cv.leave_one_engine_out`): a :func:`fit_final` model of
    ``iterations`` rounds trained without each engine, scored on its rows at ``threshold``."""
    labels = np.asarray(labels, dtype=int)

    def fit_predict(rows: np.ndarray, held_out: np.ndarray) -> np.ndarray:
        model = fit_final([texts[i] for i in rows], labels[rows], config, iterations)
        return predict_proba(model, [texts[i] for i in held_out])

    return leave_one_engine_out(engines, labels, fit_predict, threshold)


def predict_proba(model, texts: Sequence[str]) -> np.ndarray:
    """Probability of the phrase for each transcript."""
    if len(texts) == 0:
        return np.zeros(0)
    return model.predict_proba(text_frame(texts))[:, 1]


class CatBoostTextModel(TranscribingModel):
    """Approach 2's pyfunc: Whisper transcript + CatBoost text classifier (artifact ``catboost``)."""

    _loaded = ("_transcriber", "_classifier")

    def __init__(self, asr_model: str, backend: str, options: dict, threshold: float = 0.5):
        super().__init__(asr_model, backend, options)
        self.threshold = threshold
        self._classifier = None

    def load(self, context) -> None:
        from catboost import CatBoostClassifier

        super().load(context)
        self._classifier = CatBoostClassifier()
        self._classifier.load_model(context.artifacts["catboost"])

    def decide(self, texts: list[str]) -> list[tuple[int, float]]:
        probs = predict_proba(self._classifier, texts)
        return [(int(p >= self.threshold), float(p)) for p in probs]
