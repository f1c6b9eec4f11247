"""MLproject entry point ``transcribe`` (approach 1): Whisper transcription + substring rule.

Transcribes ``wav_train`` (when present) and ``wav_test`` through the transcript cache,
labels a clip 1 when the normalised transcript contains ``rule``.

Logs params (model, backend, language, beam_size, rule, phrase), ``<split>_macro_f1`` /
accuracy / precision / recall for every labelled split, and artifacts
``transcripts/transcripts.csv`` (id, split, label, text, error), ``plots/confusion_<split>.png``,
``submission/approach_1.csv`` (also written to ``out``) and the pyfunc model ``model``,
registered as ``register_as``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path

import click
import mlflow

from heardet.cli import friendly_errors


@click.command()
@click.option("--data", type=click.Path(path_type=Path), default=Path("data"), show_default=True)
@click.option("--model", default="whisper-base", show_default=True)
@click.option("--backend", default="auto", show_default=True)
@click.option("--language", default="ru", show_default=True)
@click.option("--beam-size", type=int, default=1, show_default=True)
@click.option("--rule", default="не слыш", show_default=True)
@click.option("--phrase", default="не слышу", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("outputs"), show_default=True)
@click.option("--register-as", default="heardet-rule", show_default=True)
@friendly_errors
def main(data, model, backend, language, beam_size, rule, phrase, out, register_as) -> None:
    """Run approach 1 on DATA and log it to the active MLflow run."""
    from heardet.asr import DecodeOptions, default_cache, make_transcriber, transcribe_clips
    from heardet.cli import configure_logging
    from heardet.data import load_dataset
    from heardet.pyfunc import RuleModel, log_contract_model
    from heardet.rules import rule_label
    from heardet.tracking import log_evaluation, log_params, log_submission

    configure_logging()
    log = logging.getLogger("heardet")
    dataset = load_dataset(data)
    options = DecodeOptions(language=language, beam_size=beam_size)
    with mlflow.start_run():
        mlflow.set_tag("approach", "rule")
        log_params({"data": str(data), "model": model, "backend": backend, "rule": rule,
                           "phrase": phrase, **asdict(options)})
        start = time.perf_counter()
        transcriber = make_transcriber(model, backend, options)
        mlflow.log_param("backend_used", transcriber.backend)
        table = transcribe_clips(transcriber, dataset.train + dataset.test, cache=default_cache())
        table["pred"] = [rule_label(t, rule) if not e else -1 for t, e in zip(table.text, table.error)]
        mlflow.log_metric("transcribe_seconds", time.perf_counter() - start)
        mlflow.log_text(table.to_csv(index=False), "transcripts/transcripts.csv")
        for split in ("train", "test"):
            part = table[(table.split == split) & table.label.notna()]
            if len(part):
                log_evaluation(split, part.label.astype(int), part.pred, "approach 1 (rule)")
        test = table[table.split == "test"]
        if len(test):
            log_submission(test.id, test.pred.clip(lower=0), "approach_1.csv", out)
        info = log_contract_model(
            RuleModel(model, transcriber.backend, asdict(options), rule, phrase), "model",
            registered_model_name=register_as or None,
        )
        mlflow.log_metric("wall_seconds", time.perf_counter() - start)
        log.info("model logged: %s (registered as %s)", info.model_uri, register_as)


if __name__ == "__main__":
    main()
