"""MLproject entry point ``finetune`` (approach 3): Whisper encoder → masked mean pooling →
dropout → linear head, k-fold (grouped by voice where the manifest names voices), then the final model.

Logs params (``FinetuneConfig``), per-step ``train_loss_fold<k>`` (and ``train_loss_final``)
with ``step=``, per-fold ``cv_fold_macro_f1`` / ``cv_fold_val_loss`` / ``cv_fold_seconds``
(``step=fold``), ``cv_macro_f1_mean`` / ``std``, ``cv_threshold`` (``threshold``; when it is -1, chosen on out-of-fold
scores), ``loeo_macro_f1_<engine>`` / ``_mean`` (a model trained without that engine, scored
on it), tags ``approach=finetune``, ``refit`` and ``cv_folds``, artifacts ``oof/oof_predictions.csv``,
``plots/fold_f1.png``, ``plots/oof_roc_pr.png`` and the pyfunc model ``model`` (weights, head
and feature-extractor config), registered as ``register_as`` (default
``heardet-finetune-<model>``); then scores ``wav_test`` through that logged model (test
metrics, ``test_x_real_time``, ``submission/approach_3_<model>.csv``, also written to ``out``).
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from pathlib import Path

import click
import mlflow

from heardet.approaches.finetune.train import FinetuneConfig
from heardet.cli import data_option, friendly_errors, out_option
from heardet.config import click_options, from_options


@click.command()
@data_option
@click_options(FinetuneConfig, skip=["eval_batch_size"])
@out_option
@click.option("--register-as", "--register_as", default="", help="Registered model name (default heardet-finetune-<model>).")
@click.option("--loeo", type=click.BOOL, default=True, show_default=True,
              help="Also train one model without each engine and score it on that engine (leave-one-engine-out).")
@click.option("--params-from", default="",
              help="A tune run id: use its best encoder_lr, head_lr and dropout where not given here.")
@friendly_errors
def main(data, out, register_as, loeo, params_from, **options) -> None:
    """Fine-tune MODEL's encoder on DATA and log it to the active MLflow run.

    The MLproject declares neither the tuned parameters nor ``register_as``: ``mlflow run``
    would log their defaults before this command picks the values it trains with.
    """
    from heardet.approaches.finetune.pyfunc import FinetuneModel
    from heardet.approaches.finetune.train import (
        cross_validate,
        engine_holdout,
        fit,
        model_slug,
        prepare_examples,
    )
    from heardet.approaches.finetune.tune import best_params, log_stage_seconds
    from heardet.cli import configure_logging
    from heardet.cv import is_grouped
    from heardet.data import load_dataset
    from heardet.mlops.contract import log_contract_model
    from heardet.mlops.tracking import log_cv, log_engine_holdout, log_params, log_test_split, stage_run
    from heardet.whisper.hub import ensure_available

    configure_logging()
    given = click.get_current_context().get_parameter_source
    tuned = {k: v for k, v in (best_params(params_from) if params_from else {}).items()
             if given(k) != click.core.ParameterSource.COMMANDLINE}  # a value given here wins
    config = from_options(FinetuneConfig, options, **tuned)
    ensure_available(config.model)  # fail in a second, before minutes of loading audio
    slug = model_slug(config.model)
    register_as = register_as or f"heardet-finetune-{slug}"
    dataset = load_dataset(data, require_train=True)
    with stage_run("finetune", f"finetune {config.model} {config.n_folds}-fold"):
        start = time.perf_counter()
        mlflow.set_tags({"refit": config.refit, **({"params_from": params_from} if params_from else {})})
        if tuned:
            logging.getLogger("heardet").info("using the best trial of tune run %s: %s", params_from,
                                              ", ".join(f"{k}={v:g}" for k, v in tuned.items()))
        log_params({**dataclasses.asdict(config), "data": str(data), "register_as": register_as})
        examples = prepare_examples(dataset.train, max_clips=config.max_train_clips, seed=config.seed)

        def on_step(fold, step, loss):
            mlflow.log_metric(f"train_loss_{'final' if fold is None else f'fold{fold}'}", loss, step=step)

        cv = cross_validate(examples, config, on_step=on_step)
        log_cv(cv.result, labels=examples.labels, grouped=is_grouped(examples.voices or None, config.n_folds))
        log_stage_seconds(cv.result.extra, per_fold=False)  # log_cv logged the per-fold ones
        if loeo:
            log_engine_holdout(engine_holdout(examples, config, cv.result.threshold))
        mlflow.log_text("id,label,oof_score\n" + "".join(
            f"{i},{y},{p:.6f}\n" for i, y, p in zip(examples.ids, examples.labels, cv.result.oof_score)),
            "oof/oof_predictions.csv")
        fitted = fit(examples, config, cv=cv, on_step=on_step)
        mlflow.log_metric("final_fit_seconds", fitted.seconds)
        mlflow.log_metrics({f"final_fit_{stage}_seconds": value for stage, value in fitted.stage_seconds.items()})
        if fitted.fold is not None:
            mlflow.set_tag("refit_fold", str(fitted.fold))
        with tempfile.TemporaryDirectory() as tmp:
            info = log_contract_model(FinetuneModel(config.eval_batch_size), "model",
                                      artifacts={"classifier": str(fitted.save(Path(tmp) / "classifier", config))},
                                      registered_model_name=register_as,
                                      extra_float_columns=FinetuneModel.FLOAT_COLUMNS)
        log_test_split(info.model_uri, dataset, f"approach_3_{slug}.csv", out, f"approach 3 ({slug})")
        mlflow.log_metric("wall_seconds", time.perf_counter() - start)
        logging.getLogger("heardet").info("CV macro F1 %.4f ± %.4f; model %s", cv.result.mean_f1,
                                          cv.result.std_f1, info.model_uri)


if __name__ == "__main__":
    main()
