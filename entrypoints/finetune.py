"""MLproject entry point ``finetune`` (approach 3): Whisper encoder → masked mean pooling →
dropout → linear head, stratified k-fold, then the final model.

Logs params (``FinetuneConfig``), per-step ``train_loss_fold<k>`` (and ``train_loss_final``)
with ``step=``, per-fold ``cv_fold_macro_f1`` / ``cv_fold_val_loss`` / ``cv_fold_seconds``
(``step=fold``), ``cv_macro_f1_mean`` / ``std``, ``cv_threshold`` (chosen on out-of-fold
scores), test metrics when ``wav_test`` is labelled, tags ``approach=finetune`` and
``refit`` (``all``: refit on every labelled clip; ``best_fold``), and artifacts
``oof/oof_predictions.csv``, ``plots/fold_f1.png``, ``plots/confusion_test.png``,
``submission/approach_3_<model>.csv`` (also written to ``out``) and the pyfunc model
``model`` (weights, head and feature-extractor config as artifacts), registered as
``register_as`` (default ``heardet-finetune-<model>``).
"""

from __future__ import annotations

import dataclasses
import logging
import re
import tempfile
import time
from pathlib import Path

import click
import mlflow

from heardet.cli import friendly_errors, training_options
import numpy as np


def model_slug(model: str) -> str:
    """``whisper-base`` → ``whisper-base``; ``openai/whisper-small`` → ``openai-whisper-small``;
    a local directory → its name."""
    name = Path(model).name if Path(model).exists() else model
    return re.sub(r"[^0-9A-Za-z.-]+", "-", name).strip("-").lower()


@click.command()
@training_options(n_folds=5)
@click.option("--encoder-lr", type=float, default=1e-5, show_default=True)
@click.option("--head-lr", type=float, default=3e-4, show_default=True)
@click.option("--dropout", type=float, default=0.2, show_default=True)
@click.option("--refit", type=click.Choice(["all", "best_fold"]), default="all", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("outputs"), show_default=True)
@click.option("--register-as", default="", help="Registered model name (default heardet-finetune-<model>).")
@click.option("--params-from", default="", help="A tune run id: use its best encoder_lr, head_lr and dropout.")
@friendly_errors
def main(data, model, n_folds, epochs, batch_size, encoder_lr, head_lr, dropout, max_seconds,
         freeze_encoder_steps, grad_clip, augment, seed, device, max_train_clips, refit, out, register_as,
         params_from) -> None:
    """Fine-tune MODEL's encoder on DATA and log it to the active MLflow run."""
    from heardet.audio import AudioError, load_audio
    from heardet.cli import configure_logging
    from heardet.data import load_dataset
    from heardet.finetune import FinetuneConfig, cross_validate, fit, prepare_examples
    from heardet.pyfunc import FinetuneModel, log_contract_model
    from heardet.tracking import log_cv, log_evaluation, log_params, log_submission

    configure_logging()
    log = logging.getLogger("heardet")
    if params_from:
        from heardet.tune import best_params

        best = best_params(params_from)
        encoder_lr, head_lr, dropout = best["encoder_lr"], best["head_lr"], best["dropout"]
        log.info("using the best parameters of tune run %s: %s", params_from, best)
    config = FinetuneConfig(model=model, n_folds=n_folds, epochs=epochs, batch_size=batch_size,
                            encoder_lr=encoder_lr, head_lr=head_lr, dropout=dropout, max_seconds=max_seconds,
                            freeze_encoder_steps=freeze_encoder_steps, grad_clip=grad_clip, augment=augment,
                            seed=seed, device=device, max_train_clips=max_train_clips, refit=refit)
    from heardet.whisper_hub import ensure_available

    ensure_available(model)  # fail in a second, before minutes of loading audio
    slug = model_slug(model)
    register_as = register_as or f"heardet-finetune-{slug}"
    dataset = load_dataset(data, require_train=True)
    with mlflow.start_run():
        start = time.perf_counter()
        mlflow.set_tags({"approach": "finetune", "refit": refit, **({"params_from": params_from} if params_from else {})})
        log_params({**dataclasses.asdict(config), "data": str(data), "register_as": register_as})
        # Loaded once: the folds and the final fit train on the same in-memory clips.
        examples = prepare_examples(dataset.train, max_clips=config.max_train_clips, seed=config.seed)
        arrays = (list(examples.audios), examples.labels, list(examples.bounds))

        def on_step(fold, step, loss):
            mlflow.log_metric(f"train_loss_{'final' if fold is None else f'fold{fold}'}", loss, step=step)

        cv = cross_validate(*arrays, config=config, on_step=on_step)
        log_cv(cv, labels=examples.labels)
        mlflow.log_text(
            "id,label,oof_score\n" + "".join(f"{i},{y},{p:.6f}\n" for i, y, p in
                                           zip(examples.ids, examples.labels, cv.oof_score)),
            "oof/oof_predictions.csv")
        fitted = fit(*arrays, config=config, cv_result=cv, on_step=on_step)
        mlflow.log_metric("final_fit_seconds", fitted.seconds)
        if fitted.fold is not None:
            mlflow.set_tag("refit_fold", str(fitted.fold))
        with tempfile.TemporaryDirectory() as tmp:
            classifier_dir = fitted.save(Path(tmp) / "classifier", config)
            info = log_contract_model(FinetuneModel(config.eval_batch_size), "model",
                                      artifacts={"classifier": str(classifier_dir)},
                                      registered_model_name=register_as,
                                      extra_float_columns=FinetuneModel.WINDOW_COLUMNS)
        if dataset.test:
            ok, audios = [], []
            for clip in dataset.test:
                try:
                    audios.append(load_audio(clip.path))
                    ok.append(True)
                except AudioError as exc:
                    log.warning("test clip %s", exc)
                    ok.append(False)
            test_start = time.perf_counter()
            from heardet.encoder_clf import predict_audio

            scored = iter(predict_audio(fitted.model, fitted.feature_extractor, audios, config.max_seconds,
                                        config.eval_batch_size, fitted.threshold, progress=True))
            preds = np.array([next(scored).label if good else -1 for good in ok])
            audio_s = sum(len(a) for a in audios) / 16_000
            mlflow.log_metric("test_x_real_time", audio_s / max(time.perf_counter() - test_start, 1e-9))
            if dataset.test_labelled:
                log_evaluation("test", [c.label for c in dataset.test], preds, f"approach 3 ({slug})")
            log_submission([c.id for c in dataset.test], np.clip(preds, 0, None), f"approach_3_{slug}.csv", out)
        mlflow.log_metric("wall_seconds", time.perf_counter() - start)
        log.info("CV macro F1 %.4f ± %.4f; threshold %.3f; model %s registered as %s",
                 cv.mean_f1, cv.std_f1, cv.threshold, info.model_uri, register_as)


if __name__ == "__main__":
    main()
