"""MLproject entry point ``catboost`` (approach 2): CatBoost on Whisper transcripts, k-fold.

Reuses cached transcripts (the ``transcribe`` entry point fills the cache), runs
``StratifiedKFold(n_folds, shuffle, seed)`` with early stopping on each fold's validation
part, refits on all labelled clips for the folds' median best iteration.

Logs params (CatBoost config, model, backend, language), ``cv_fold_macro_f1`` per fold
(``step=fold``), ``cv_macro_f1_mean``/``std``, ``cv_threshold``, test-split metrics when
labelled, and artifacts ``oof/oof_predictions.csv``, ``plots/fold_f1.png``,
``plots/confusion_<split>.png``, ``submission/approach_2.csv`` (also written to ``out``) and
the pyfunc model ``model`` (Whisper + CatBoost), registered as ``register_as``.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import click
import mlflow

from heardet.cli import friendly_errors
import numpy as np


@click.command()
@click.option("--data", type=click.Path(path_type=Path), default=Path("data"), show_default=True)
@click.option("--model", default="whisper-base", show_default=True)
@click.option("--backend", default="auto", show_default=True)
@click.option("--language", default="ru", show_default=True)
@click.option("--n-folds", type=int, default=5, show_default=True)
@click.option("--iterations", type=int, default=10_000, show_default=True)
@click.option("--eval-metric", default="Accuracy", show_default=True)
@click.option("--early-stopping-rounds", type=int, default=300, show_default=True)
@click.option("--learning-rate", type=float, default=None)
@click.option("--depth", type=int, default=6, show_default=True)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("outputs"), show_default=True)
@click.option("--register-as", default="heardet-catboost", show_default=True)
@friendly_errors
def main(data, model, backend, language, n_folds, iterations, eval_metric, early_stopping_rounds,
         learning_rate, depth, seed, out, register_as) -> None:
    """Run approach 2 on DATA and log it to the active MLflow run."""
    from heardet.asr import DecodeOptions, default_cache, make_transcriber, transcribe_clips
    from heardet.cli import configure_logging
    from heardet.data import load_dataset
    from heardet.pyfunc import CatBoostTextModel, log_contract_model
    from heardet.textclf import CatBoostConfig, cross_validate, fit_final, predict_proba
    from heardet.tracking import log_cv, log_evaluation, log_params, log_submission

    configure_logging()
    log = logging.getLogger("heardet")
    config = CatBoostConfig(n_folds=n_folds, iterations=iterations, eval_metric=eval_metric,
                            early_stopping_rounds=early_stopping_rounds, learning_rate=learning_rate,
                            depth=depth, seed=seed)
    dataset = load_dataset(data, require_train=True)
    options = DecodeOptions(language=language)
    with mlflow.start_run():
        mlflow.set_tag("approach", "catboost")
        log_params({"data": str(data), "model": model, "backend": backend, **asdict(config),
                           **{f"asr_{k}": v for k, v in asdict(options).items()}})
        start = time.perf_counter()
        transcriber = make_transcriber(model, backend, options)
        table = transcribe_clips(transcriber, dataset.train + dataset.test, cache=default_cache())
        mlflow.log_metric("transcribe_seconds", time.perf_counter() - start)
        train = table[(table.split == "train") & (table.error == "")]
        cv = cross_validate(list(train.text), train.label.astype(int).to_numpy(), config)
        log_cv(cv, labels=train.label.astype(int).to_numpy())
        oof = train[["id", "label", "text"]].assign(oof_score=cv.oof_score)
        mlflow.log_text(oof.to_csv(index=False), "oof/oof_predictions.csv")
        final_iterations = int(np.median(cv.extra["best_iteration"]))
        mlflow.log_param("final_iterations", final_iterations)
        classifier = fit_final(list(train.text), train.label.astype(int), config, final_iterations)
        test = table[table.split == "test"]
        if len(test):
            ok = test.error == ""
            probs = np.full(len(test), np.nan)
            probs[ok.to_numpy()] = predict_proba(classifier, list(test.text[ok]))
            preds = np.where(ok, (probs >= cv.threshold).astype(int), -1)
            if test.label.notna().all():
                log_evaluation("test", test.label.astype(int), preds, "approach 2 (catboost)")
            log_submission(test.id, np.clip(preds, 0, None), "approach_2.csv", out)
        with tempfile.TemporaryDirectory() as tmp:
            cbm = Path(tmp) / "catboost.cbm"
            classifier.save_model(str(cbm))
            info = log_contract_model(
                CatBoostTextModel(model, transcriber.backend, asdict(options), cv.threshold), "model",
                artifacts={"catboost": str(cbm)}, registered_model_name=register_as or None,
            )
        mlflow.log_metric("wall_seconds", time.perf_counter() - start)
        log.info("CV macro F1 %.4f ± %.4f; model %s", cv.mean_f1, cv.std_f1, info.model_uri)


if __name__ == "__main__":
    main()
