"""MLproject entry point ``tune``: an Optuna search over the fine-tune's encoder lr (log),
head lr (log) and dropout, maximising its cross-validated macro F1.

The entry point's run is the parent (tag ``approach=tune``): params (the search and the
shared fine-tune settings), ``best_encoder_lr`` / ``best_head_lr`` / ``best_dropout``,
metrics ``best_value``, ``n_complete`` / ``n_pruned`` / ``n_failed``, ``n_trials_study``,
``tune_seconds``, tags ``best_trial_run_id``, ``best_trial_number``, ``optuna_study``,
``optuna_storage`` (``plots_skipped`` when a plot needs more trials), and artifacts
``plots/optimization_history.png``, ``plots/param_importances.png`` (>= 2 complete trials),
``plots/intermediate_values.png``.

Each trial is a nested run ``trial-<n>`` (tags ``approach=finetune``, ``trial_number``,
``parent`` = study name, ``trial_state`` = COMPLETE / PRUNED / FAIL, ``best_trial=true`` on
the best): the fine-tune params, ``cv_fold_macro_f1`` / ``cv_fold_val_loss`` (``step=fold``),
``train_loss_fold<k>``, ``cv_macro_f1_mean`` / ``min`` / ``median`` / ``std``; a failed trial
has status FAILED, an ``error`` tag and ``error.txt``.

The study lives in ``storage`` (default ``optuna.db`` next to the MLflow store); rerunning
with the same ``study_name`` adds trials to it.
"""

from __future__ import annotations

import dataclasses
import logging

import click
import mlflow

from heardet.cli import friendly_errors, training_options


@click.command()
@training_options(n_folds=3)
@click.option("--encoder-lr-min", type=float, default=1e-6, show_default=True)
@click.option("--encoder-lr-max", type=float, default=1e-4, show_default=True)
@click.option("--head-lr-min", type=float, default=1e-4, show_default=True)
@click.option("--head-lr-max", type=float, default=1e-2, show_default=True)
@click.option("--dropout-min", type=float, default=0.0, show_default=True)
@click.option("--dropout-max", type=float, default=0.5, show_default=True)
@click.option("--n-trials", type=int, default=10, show_default=True)
@click.option("--timeout", type=float, default=0.0, show_default=True, help="Seconds; 0 = no limit.")
@click.option("--sampler-seed", type=int, default=0, show_default=True)
@click.option("--pruner", default="median", show_default=True, help="median or none.")
@click.option("--metric", default="cv_macro_f1_mean", show_default=True,
              help="cv_macro_f1_mean, cv_macro_f1_min or cv_macro_f1_median.")
@click.option("--study-name", default="heardet-tune", show_default=True)
@click.option("--storage", default="", help="Optuna storage URL (default: optuna.db next to the MLflow store).")
@friendly_errors
def main(data, model, n_folds, epochs, batch_size, max_seconds, freeze_encoder_steps, grad_clip, augment, seed,
         device, max_train_clips, encoder_lr_min, encoder_lr_max, head_lr_min, head_lr_max, dropout_min,
         dropout_max, n_trials, timeout, sampler_seed, pruner, metric, study_name, storage) -> None:
    """Search the fine-tune's learning rates and dropout on DATA; each trial is a nested run."""
    import optuna

    from heardet.cli import configure_logging
    from heardet.data import load_dataset
    from heardet.finetune import FinetuneConfig, prepare_examples
    from heardet.tracking import log_params
    from heardet.tune import TUNED, TuneConfig, log_result, redact, tune
    from heardet.whisper_hub import ensure_available

    configure_logging()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # heardet logs one line per trial instead
    search = TuneConfig(encoder_lr_min=encoder_lr_min, encoder_lr_max=encoder_lr_max, head_lr_min=head_lr_min,
                        head_lr_max=head_lr_max, dropout_min=dropout_min, dropout_max=dropout_max,
                        n_trials=n_trials, timeout=timeout, sampler_seed=sampler_seed, pruner=pruner,
                        metric=metric, study_name=study_name, storage=storage)
    base = FinetuneConfig(model=model, n_folds=n_folds, epochs=epochs, batch_size=batch_size,
                          max_seconds=max_seconds, freeze_encoder_steps=freeze_encoder_steps, grad_clip=grad_clip,
                          augment=augment, seed=seed, device=device, max_train_clips=max_train_clips)
    ensure_available(model)  # fail in a second, before minutes of loading audio
    dataset = load_dataset(data, require_train=True)
    with mlflow.start_run():
        mlflow.set_tag("approach", "tune")
        shared = {k: v for k, v in dataclasses.asdict(base).items() if k not in (*TUNED, "refit")}
        log_params({**dataclasses.asdict(search), "storage": redact(storage), **shared, "data": str(data)})
        # Loaded once: every trial trains on the same in-memory clips.
        examples = prepare_examples(dataset.train, max_clips=base.max_train_clips, seed=base.seed)
        result = tune(examples, search, base, data_name=str(data))
        log_result(result, search)
        if result.best_trial is None:
            raise click.ClickException(
                f"no trial of study {study_name!r} completed ({result.count('FAIL')} failed, "
                f"{result.count('PRUNED')} pruned here); see the trial runs' `error` tag")
        logging.getLogger("heardet").info("best %s %.4f: %s (trial run %s)", metric, result.best_trial.value,
                                          result.best_params, result.best_run_id)


if __name__ == "__main__":
    main()
