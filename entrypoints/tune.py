"""MLproject entry point ``tune``: an Optuna search over the fine-tune's encoder lr (log),
head lr (log) and dropout, maximising its cross-validated macro F1.

The entry point's run is the parent (tag ``approach=tune``): params (the search and the
shared fine-tune settings), ``best_encoder_lr`` / ``best_head_lr`` / ``best_dropout``,
metrics ``best_value``, ``n_complete`` / ``n_pruned`` / ``n_failed``, ``n_trials_study``,
``tune_seconds``, ``top_value``, tags ``best_trial_run_id``, ``best_trial_number``, ``selection``
(why that trial: ``select=best`` hands on the highest, ``one_se`` the start point unless the highest
beats it by more than one standard error of its folds), ``top_trial_number``, ``optuna_study``,
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

from heardet.approaches.finetune.train import FinetuneConfig
from heardet.approaches.finetune.tune import TUNED, TuneConfig
from heardet.cli import data_option, friendly_errors
from heardet.config import click_options, from_options


@click.command()
@data_option
@click_options(FinetuneConfig, skip=[*TUNED, "refit", "eval_batch_size"], defaults={"n_folds": 3})
@click_options(TuneConfig)
@friendly_errors
def main(data, **options) -> None:
    """Search the fine-tune's learning rates and dropout on DATA; each trial is a nested run."""
    import optuna

    from heardet.approaches.finetune.train import prepare_examples
    from heardet.approaches.finetune.tune import check_stage_b, has_password, log_result, redact, tune
    from heardet.cli import configure_logging
    from heardet.data import load_dataset
    from heardet.mlops.tracking import log_params, stage_run
    from heardet.whisper.hub import ensure_available

    configure_logging()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # heardet logs one line per trial instead
    if has_password(options["storage"]):
        warn_of_logged_password()
    search = from_options(TuneConfig, options)
    check_stage_b(search, options["top_layers"])  # its message before the shared settings' (which refuse it too)
    # What the search holds fixed (encoder_lr=0 for a frozen encoder) is part of every trial's settings, so the
    # shared settings are checked with it: outside_weight, for one, needs the frozen encoder's cached states.
    base = from_options(FinetuneConfig, options, **search.fixed)
    ensure_available(base.model)  # fail in a second, before minutes of loading audio
    dataset = load_dataset(data, require_train=True)
    with stage_run("tune", f"tune {base.model} {search.n_trials} trials"):
        shared = {k: v for k, v in dataclasses.asdict(base).items() if k not in (*TUNED, "refit")}
        log_params({**dataclasses.asdict(search), "storage": redact(search.storage), **shared, "data": str(data)})
        # Loaded once: every trial trains on the same in-memory clips.
        examples = prepare_examples(dataset.train, max_clips=base.max_train_clips, seed=base.seed)
        result = tune(examples, search, base, data_name=str(data))
        log_result(result, search)
        if result.best_trial is None:
            raise click.ClickException(
                f"no trial of study {search.study_name!r} completed ({result.count('FAIL')} failed, "
                f"{result.count('PRUNED')} pruned here); see the trial runs' `error` tag")
        logging.getLogger("heardet").info("handed on: %s (trial run %s)", result.best_params, result.best_run_id)


def warn_of_logged_password() -> None:
    """``mlflow run`` logged ``storage``, password included, before this command started (and
    printed it in its command line): name the run, and how to remove it. The config check
    that follows refuses the URL; deleting the user's run is left to them."""
    import os

    import mlflow

    from heardet.approaches.finetune.tune import has_password
    from heardet.mlops.tracking import logged_value

    run_id = os.environ.get("MLFLOW_RUN_ID")
    if not run_id:
        return
    if has_password(logged_value(mlflow.MlflowClient().get_run(run_id).data.params.get("storage", ""))):
        logging.getLogger("heardet").error(
            "mlflow run has logged the storage URL, password included, as a parameter of run %s: remove it "
            "with `mlflow runs delete --run-id %s` then `mlflow gc`, and change a shared database's password",
            run_id, run_id)


if __name__ == "__main__":
    main()
