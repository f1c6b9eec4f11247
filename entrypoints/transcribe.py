"""MLproject entry point ``transcribe`` (approach 1): Whisper transcription + substring rule.

Transcribes ``wav_train`` (when present) and ``wav_test`` through the transcript cache,
labels a clip 1 when the normalised transcript contains ``rule``.

Logs params (``TranscriberConfig``, ``RuleConfig``, ``DecodeOptions``), ``train_macro_f1``
etc. when ``wav_train`` is labelled, artifacts ``transcripts/transcripts.csv`` (id, split,
label, text, error), ``plots/confusion_<split>.png`` and the pyfunc model ``model``,
registered as ``register_as``; then scores ``wav_test`` through that logged model
(:func:`heardet.mlops.tracking.log_test_split`: test metrics, ``submission/approach_1.csv``,
also written to ``out``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict

import click
import mlflow

from heardet.approaches.rule import RuleConfig
from heardet.cli import data_option, friendly_errors, out_option
from heardet.config import click_options, from_options
from heardet.whisper.asr import DecodeOptions, TranscriberConfig


@click.command()
@data_option
@click_options(TranscriberConfig)
@click_options(DecodeOptions, only=["language", "beam_size", "window"])
@click_options(RuleConfig)
@out_option
@click.option("--max-train-clips", type=click.IntRange(min=0), default=0, show_default=True,
              help="Use a label-stratified subsample of this many train clips (0 = all); transcribe and catboost "
                   "take the same one.")
@click.option("--register-as", default="heardet-rule", show_default=True)
@friendly_errors
def main(data, out, max_train_clips, register_as, **options) -> None:
    """Run approach 1 on DATA and log it to the active MLflow run."""
    from heardet.approaches.rule import RuleModel, rule_label
    from heardet.cli import configure_logging
    from heardet.data import load_dataset, subsample_clips
    from heardet.mlops.contract import log_contract_model
    from heardet.mlops.tracking import (
        log_evaluation,
        log_params,
        log_test_split,
        stage_run,
    )
    from heardet.whisper.asr import default_cache, make_transcriber, transcribe_clips

    configure_logging()
    asr, decode = from_options(TranscriberConfig, options), from_options(DecodeOptions, options)
    rule = from_options(RuleConfig, options)
    dataset = load_dataset(data)
    with stage_run("rule", f"rule {asr.model}"):
        log_params({"data": str(data), "max_train_clips": max_train_clips, **asdict(asr), **asdict(rule),
                    **asdict(decode)})
        start = time.perf_counter()
        transcriber = make_transcriber(asr.model, asr.backend, decode)
        mlflow.log_param("backend_used", transcriber.backend)
        train_clips = subsample_clips(dataset.train, max_train_clips)
        table = transcribe_clips(transcriber, [*train_clips, *dataset.test], cache=default_cache())
        table["pred"] = [rule_label(t, rule.rule) if not e else -1 for t, e in zip(table.text, table.error)]
        mlflow.log_metric("transcribe_seconds", time.perf_counter() - start)
        mlflow.log_text(table.to_csv(index=False), "transcripts/transcripts.csv")
        train = table[(table.split == "train") & table.label.notna()]
        if len(train):
            log_evaluation("train", train.label.astype(int), train.pred, "approach 1 (rule)")
            # The rule learns nothing, so its train predictions are as honest as out-of-fold ones (for the ensemble).
            mlflow.log_text(train[["id", "label"]].assign(oof_score=train.pred.clip(lower=0)).to_csv(index=False),
                            "oof/oof_predictions.csv")
        model = RuleModel(asr.model, transcriber.backend, asdict(decode), rule.rule, rule.phrase)
        info = log_contract_model(model, "model", registered_model_name=register_as or None)
        log_test_split(info.model_uri, dataset, "approach_1.csv", out, "approach 1 (rule)")
        mlflow.log_metric("wall_seconds", time.perf_counter() - start)
        logging.getLogger("heardet").info("model logged: %s (registered as %s)", info.model_uri, register_as)


if __name__ == "__main__":
    main()
