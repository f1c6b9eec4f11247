"""MLproject entry point ``catboost`` (approach 2): CatBoost on Whisper transcripts, k-fold.

Reuses cached transcripts (the ``transcribe`` entry point fills the cache), runs k-fold CV
grouped by voice where the data's manifest names voices (``heardet.cv.folds``; else stratified)
with early stopping on each fold's validation part, refits on all labelled clips for the folds'
median best iteration.

Logs params (``CatBoostConfig``, ``TranscriberConfig``, language), ``cv_fold_macro_f1`` per
fold (``step=fold``), ``cv_macro_f1_mean``/``std``, ``cv_threshold``, the tag ``cv_folds``,
``loeo_macro_f1_<engine>``/``_mean`` (trained without that engine, scored on it), artifacts
``oof/oof_predictions.csv``, ``plots/fold_f1.png``, ``plots/oof_roc_pr.png`` and the pyfunc
model ``model`` (Whisper + CatBoost), registered as ``register_as``; then scores ``wav_test``
through that logged model (test metrics, ``submission/approach_2.csv``, also written to ``out``).
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import click
import mlflow
import numpy as np

from heardet.approaches.catboost import CatBoostConfig
from heardet.cli import data_option, friendly_errors, out_option
from heardet.config import click_options, from_options
from heardet.whisper.asr import DecodeOptions, TranscriberConfig


@click.command()
@data_option
@click_options(TranscriberConfig)
@click_options(DecodeOptions, only=["language", "window"])
@click_options(CatBoostConfig, skip=["thread_count"])
@out_option
@click.option("--max-train-clips", type=click.IntRange(min=0), default=0, show_default=True,
              help="Use a label-stratified subsample of this many train clips (0 = all); transcribe and catboost "
                   "take the same one.")
@click.option("--register-as", default="heardet-catboost", show_default=True)
@friendly_errors
def main(data, out, max_train_clips, register_as, **options) -> None:
    """Run approach 2 on DATA and log it to the active MLflow run."""
    from heardet.approaches.catboost import CatBoostTextModel, cross_validate, engine_holdout, fit_final
    from heardet.cli import configure_logging
    from heardet.cv import is_grouped
    from heardet.data import groups_of, load_dataset, subsample_clips
    from heardet.mlops.contract import log_contract_model
    from heardet.mlops.tracking import log_cv, log_engine_holdout, log_params, log_test_split, stage_run
    from heardet.whisper.asr import default_cache, make_transcriber, transcribe_clips

    configure_logging()
    asr, decode = from_options(TranscriberConfig, options), from_options(DecodeOptions, options)
    config = from_options(CatBoostConfig, options)
    dataset = load_dataset(data, require_train=True)
    with stage_run("catboost", f"catboost {asr.model} {config.n_folds}-fold"):
        log_params({"data": str(data), "max_train_clips": max_train_clips, **asdict(asr), **asdict(config),
                    **{f"asr_{k}": v for k, v in asdict(decode).items()}})
        start = time.perf_counter()
        transcriber = make_transcriber(asr.model, asr.backend, decode)
        table = transcribe_clips(transcriber, subsample_clips(dataset.train, max_train_clips), cache=default_cache())
        mlflow.log_metric("transcribe_seconds", time.perf_counter() - start)
        train = table[table.error == ""]
        labels = train.label.astype(int).to_numpy()
        clips = {c.id: c for c in dataset.train}
        kept = [clips[i] for i in train.id]
        voices = groups_of(kept, "voice")
        cv = cross_validate(list(train.text), labels, config, groups=voices)
        log_cv(cv, labels=labels, grouped=is_grouped(voices, config.n_folds))
        final_iterations = int(np.median(cv.extra["best_iteration"]))
        log_engine_holdout(engine_holdout(list(train.text), labels, groups_of(kept, "engine"), config,
                                          final_iterations, cv.threshold))
        mlflow.log_text(train[["id", "label", "text"]].assign(oof_score=cv.oof_score).to_csv(index=False),
                        "oof/oof_predictions.csv")
        mlflow.log_param("final_iterations", final_iterations)
        classifier = fit_final(list(train.text), labels, config, final_iterations)
        with tempfile.TemporaryDirectory() as tmp:
            classifier.save_model(str(Path(tmp) / "catboost.cbm"))
            model = CatBoostTextModel(asr.model, transcriber.backend, asdict(decode), cv.threshold)
            info = log_contract_model(model, "model", artifacts={"catboost": str(Path(tmp) / "catboost.cbm")},
                                      registered_model_name=register_as or None)
        log_test_split(info.model_uri, dataset, "approach_2.csv", out, "approach 2 (catboost)")
        mlflow.log_metric("wall_seconds", time.perf_counter() - start)
        logging.getLogger("heardet").info("CV macro F1 %.4f ± %.4f; model %s", cv.mean_f1, cv.std_f1,
                                          info.model_uri)


if __name__ == "__main__":
    main()
