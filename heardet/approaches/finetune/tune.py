"""Hyperparameter search for the fine-tune (approach 3): Optuna over encoder lr, head lr and dropout.

The objective of a trial is the fine-tune's cross-validated macro F1
(:func:`heardet.approaches.finetune.train.cross_validate`), aggregated over folds as ``TuneConfig.metric`` says.
Every fold reports the aggregate so far, so the median pruner can stop a trial that is
already worse than the median of earlier trials at the same fold. The trial whose parameters the search
hands on is the highest, or with ``TuneConfig.select="one_se"`` the start point unless the highest beats it by
more than one standard error of its folds (:func:`select_trial`).

Tracking: the caller's active MLflow run is the parent (the study); each trial is a nested
run with its parameters, per-fold F1 and a ``trial_state`` tag. A trial that raises is
recorded as failed (run status FAILED, ``error`` tag, ``error.txt``) and the study goes on.

Storage: Optuna's RDB storage, by default a SQLite file next to the MLflow store, so that a
rerun with the same study name resumes the study. Several workers (machines) can share one
study through a PostgreSQL URL.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import statistics
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from heardet.config import is_int, is_number, is_text, one_of, setting, validate

if TYPE_CHECKING:
    import optuna

    from heardet.approaches.finetune.train import (
        EncoderFactory,
        FinetuneConfig,
        LabelledAudio,
    )

logger = logging.getLogger(__name__)

TUNED = ("encoder_lr", "head_lr", "dropout")  # FinetuneConfig fields the search samples
METRICS: dict[str, Callable[[list[float]], float]] = {
    "cv_macro_f1_mean": statistics.fmean,
    "cv_macro_f1_min": min,
    "cv_macro_f1_median": statistics.median,
}
PRUNERS = ("median", "none")
# Which trial a search hands on (TuneConfig.select): "best", the highest value; "one_se", the start point unless
# the highest beats it by more than one standard error of its folds (the one-standard-error rule).
SELECTIONS = ("best", "one_se")
MEDIAN_STARTUP_TRIALS = 3  # trials that always run in full before the median pruner may stop one
# FinetuneConfig fields that change what a trial's value means: a resumed study must keep them.
OBJECTIVE_FIELDS = ("model", "n_folds", "epochs", "batch_size", "max_seconds", "freeze_encoder_steps",
                    "grad_clip", "augment", "seed", "max_train_clips", "pooling", "layers",
                    "top_layers", "top_epochs", "feature_dropout", "style_mix", "frame_head", "center",
                    "outside_weight", "hard_negative_weight", "average_epochs")
ERROR_TAG_CHARS = 5000  # MLflow tag values are limited; the full traceback goes to error.txt
OPTUNA_DB = "optuna.db"
STORAGE_ENV = "HEARDET_OPTUNA_STORAGE"  # the default study storage, e.g. a team stack's PostgreSQL database
HEARTBEAT_S = 30  # a running trial's heartbeat into the study's storage
GRACE_S = 120  # a RUNNING trial silent this long belongs to a worker that died: it is marked FAIL


@dataclass(frozen=True)
class TuneConfig:
    """The search: ranges, budget, sampler, pruner, objective and where the study lives.

    Attributes:
        encoder_lr_min, encoder_lr_max: encoder learning-rate range, sampled on a log scale (> 0);
            both 0 keeps the encoder frozen in every trial, so trials train heads on cached
            encoder features (seconds each instead of minutes).
        head_lr_min, head_lr_max: head learning-rate range, sampled on a log scale (> 0).
        dropout_min, dropout_max: dropout range, sampled uniformly, within [0, 1).
        n_trials: trials this call adds to the study (>= 1).
        timeout: stop starting new trials after this many seconds (0 = no limit).
        sampler_seed: seed of the TPE sampler; offset by the trials already in the study so
            that a resumed study does not repeat its first points.
        pruner: ``median`` (stop a trial below the median at the same fold) or ``none``.
        metric: the objective, maximised: ``cv_macro_f1_mean``, ``cv_macro_f1_min`` or
            ``cv_macro_f1_median`` of the per-fold macro F1.
        study_name: the Optuna study; an existing one is resumed.
        storage: Optuna storage URL; empty = ``optuna.db`` next to the MLflow store (see
            :func:`default_storage`).
        start: a first trial at a known point, e.g. ``encoder_lr=3e-5,head_lr=1e-3,dropout=0.2``,
            before the sampler explores (empty = none); skipped when the study already has it.
        select: which complete trial's parameters the search hands on (:func:`select_trial`): ``best``, the
            highest value; ``one_se``, the :attr:`start` point's trial unless the highest beats it by more than
            one standard error of the highest trial's per-fold values. With few folds on few clips the
            highest of a handful of trials often leads by less than the folds disagree among themselves, and
            ``one_se`` then keeps the known point rather than a lead the data cannot tell from noise.
    """

    encoder_lr_min: float = setting(1e-6, "a number > 0 (log scale), or 0 with encoder_lr_max 0 (frozen)",
                                    is_number(0))
    encoder_lr_max: float = setting(1e-4, "a number > 0 (log scale), or 0 (frozen encoder)", is_number(0))
    head_lr_min: float = setting(1e-4, "a number > 0 (log scale)", is_number(0, low_open=True))
    head_lr_max: float = setting(1e-2, "a number > 0 (log scale)", is_number(0, low_open=True))
    dropout_min: float = setting(0.0, "a number in [0, 1)", is_number(0, 1, high_open=True))
    dropout_max: float = setting(0.5, "a number in [0, 1)", is_number(0, 1, high_open=True))
    n_trials: int = setting(10, "an integer >= 1", is_int(1), "Trials this call adds to the study.")
    timeout: float = setting(0.0, "seconds >= 0 (0 = no limit)", is_number(0), "Seconds; 0 = no limit.")
    sampler_seed: int = setting(0, "an integer >= 0", is_int(0))
    pruner: str = setting("median", " or ".join(map(repr, PRUNERS)), one_of(*PRUNERS))
    metric: str = setting("cv_macro_f1_mean", " or ".join(map(repr, METRICS)), one_of(*METRICS))
    study_name: str = setting("heardet-tune", "a non-empty name", is_text)
    storage: str = setting("", "'' (optuna.db next to the MLflow store) or a database URL such as "
                           "'sqlite:///optuna.db' or 'postgresql://user@host/db'",
                           lambda v: isinstance(v, str) and (v == "" or "://" in v),
                           "Optuna storage URL (default: $HEARDET_OPTUNA_STORAGE, else optuna.db next to the MLflow "
                           "store).")
    start: str = setting("", "'' or name=value pairs of the searched parameters, e.g. "
                         "'encoder_lr=3e-5,head_lr=1e-3,dropout=0.2', each within its range",
                         lambda v: isinstance(v, str), "A first trial at these values (empty = none).")
    select: str = setting("best", " or ".join(map(repr, SELECTIONS)) + " ('one_se' needs start)",
                          one_of(*SELECTIONS),
                          "The trial handed on: best (the highest value), or one_se (the start point unless the "
                          "highest beats it by more than one standard error of its folds).")

    def __post_init__(self) -> None:
        if has_password(self.storage):  # said without the value: validate() would echo it
            raise ValueError(f"TuneConfig.storage={redact(self.storage)!r} carries a password; leave it out of the "
                             "URL (postgresql://user@host/db) and give it in PGPASSWORD or ~/.pgpass, which the "
                             "PostgreSQL driver reads, so that it never reaches run parameters or logs")
        checks = {f"{name}_max": (getattr(self, f"{name}_max") >= getattr(self, f"{name}_min"),
                                  f"a number >= {name}_min ({getattr(self, f'{name}_min')!r})")
                  for name in ("encoder_lr", "head_lr", "dropout")}
        checks["encoder_lr_min"] = (self.encoder_lr_min > 0 or self.encoder_lr_max == 0,
                                    "a number > 0 (log scale), or 0 together with encoder_lr_max=0 (frozen)")
        try:
            point = self.start_point()
            start_ok = all(low <= point[name] <= high for name, (low, high, _) in self.search_space().items()
                           if name in point) and set(point) <= set(self.search_space())
        except ValueError:
            start_ok = False
        checks["start"] = (start_ok, "'' or name=value pairs of " + ", ".join(self.search_space())
                           + ", each within its range (e.g. 'head_lr=1e-3,dropout=0.2')")
        checks["select"] = (self.select != "one_se" or bool(self.start.strip()),
                            "'best', or 'one_se' together with a start point (start) to keep within noise")
        validate(self, checks)

    def start_point(self) -> dict[str, float]:
        """:attr:`start` as ``{name: value}`` (empty when there is none).

        Raises:
            ValueError: a pair that is not ``name=number``.
        """
        point = {}
        for pair in filter(None, (p.strip() for p in self.start.split(","))):
            name, sep, value = pair.partition("=")
            if not sep:
                raise ValueError(f"{pair!r} is not name=value")
            point[name.strip()] = float(value)
        return point

    @property
    def fixed(self) -> dict[str, float]:
        """Tuned parameters this search holds constant: ``encoder_lr=0`` for a frozen encoder."""
        return {"encoder_lr": 0.0} if self.encoder_lr_max == 0 else {}

    def search_space(self) -> dict[str, tuple[float, float, bool]]:
        """``{param: (low, high, log)}`` for the sampled fine-tune parameters (not those in :attr:`fixed`)."""
        space = {"encoder_lr": (self.encoder_lr_min, self.encoder_lr_max, True),
                 "head_lr": (self.head_lr_min, self.head_lr_max, True),
                 "dropout": (self.dropout_min, self.dropout_max, False)}
        return {k: v for k, v in space.items() if k not in self.fixed}


def check_stage_b(config: TuneConfig, top_layers: int) -> None:
    """Refuse a frozen search (``encoder_lr_max=0``) for trials that train the encoder's top layers.

    Raises:
        ValueError: ``top_layers > 0`` with a search that holds ``encoder_lr`` at 0.
    """
    if top_layers and config.encoder_lr_max == 0:
        raise ValueError(f"top_layers={top_layers} trains the encoder's top layers at the sampled encoder_lr; "
                         "give encoder_lr_min and encoder_lr_max > 0, or top_layers=0 to tune a frozen encoder's head")


@dataclass(frozen=True)
class TuneResult:
    """What one :func:`tune` call did, and the trial it hands on.

    Attributes:
        study: the Optuna study (all trials, this call's and earlier ones).
        trials: the trials this call ran, in order.
        best_trial: the complete trial whose parameters the search hands on (:func:`select_trial`: the highest,
            or with ``select="one_se"`` the start point where the highest leads within noise), or None when no
            trial completed.
        best_run_id: the MLflow run of ``best_trial`` (None when unknown).
        storage: the storage URL, password hidden.
        seconds: wall time of the search.
        top_trial: the study's complete trial of the highest value (``best_trial`` unless ``one_se`` kept the
            start point).
        selection: why ``best_trial`` was handed on, in a sentence.
    """

    study: optuna.Study
    trials: tuple[optuna.trial.FrozenTrial, ...]
    best_trial: optuna.trial.FrozenTrial | None
    best_run_id: str | None
    storage: str
    seconds: float
    top_trial: optuna.trial.FrozenTrial | None
    selection: str

    def count(self, state: str) -> int:
        """This call's trials in ``state`` (``COMPLETE``, ``PRUNED``, ``FAIL``)."""
        return sum(t.state.name == state for t in self.trials)

    @property
    def best_params(self) -> dict[str, float]:
        if not self.best_trial:
            return {}
        return {**self.best_trial.user_attrs.get("fixed_params", {}), **self.best_trial.params}


def default_storage(tracking_uri: str | None = None) -> str:
    """``$HEARDET_OPTUNA_STORAGE`` when set (``heardet stack start`` prints it), else
    ``sqlite:///<dir>/optuna.db`` beside a ``sqlite:///<dir>/mlflow.db`` tracking store, else
    ``sqlite:///optuna.db`` (the working directory)."""
    if os.environ.get(STORAGE_ENV):
        return os.environ[STORAGE_ENV]
    if tracking_uri is None:
        import mlflow

        tracking_uri = mlflow.get_tracking_uri()
    prefix = "sqlite:///"
    if tracking_uri.startswith(prefix):
        directory = tracking_uri[len(prefix):].rpartition("/")[0]
        return f"{prefix}{directory}/{OPTUNA_DB}" if directory else f"{prefix}{OPTUNA_DB}"
    return f"{prefix}{OPTUNA_DB}"


def has_password(url: str) -> bool:
    """Whether a database URL carries a password (``scheme://user:password@host/db``)."""
    from urllib.parse import urlsplit

    try:
        return bool("://" in url and urlsplit(url).password)
    except ValueError:
        return False


def redact(url: str) -> str:
    """``url`` with its password hidden, fit for logs and run tags."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a SQLAlchemy URL: Optuna will say so; don't echo it
        return url.split("@")[-1] if "@" in url else url


STORAGE_ATTEMPTS = 5  # workers starting together on an empty database race to create Optuna's tables


def _open_storage(storage: str) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage with heartbeats; a worker that loses the race to create its tables (PostgreSQL: a
    unique violation on the new table's type) tries again, and then finds them made."""
    import optuna
    import sqlalchemy.exc

    def connect() -> optuna.storages.RDBStorage:
        return optuna.storages.RDBStorage(storage, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                                          failed_trial_callback=_end_stale_trial_run)

    for attempt in range(1, STORAGE_ATTEMPTS):
        try:
            return connect()
        except sqlalchemy.exc.IntegrityError:
            logger.info("another worker is creating the study's tables in %s; trying again", redact(storage))
            time.sleep(0.5 * attempt)
    return connect()  # the last attempt's error is the caller's


def data_fingerprint(examples: LabelledAudio) -> str:
    """A digest of the clips a study's trials train and score on: their ids, labels, bounds and audio."""
    import numpy as np

    from heardet.whisper.cache import content_hash

    lines = (f"{clip_id}\t{int(label)}\t{bounds}\t{content_hash(np.ascontiguousarray(audio, np.float32).tobytes())}"
             for clip_id, label, bounds, audio in zip(examples.ids, examples.labels, examples.bounds, examples.audios))
    return content_hash("\n".join(lines).encode())[:16]


def open_study(config: TuneConfig, base: FinetuneConfig, data: str = "") -> optuna.Study:
    """Create the study, or resume it (``load_if_exists``) when it already exists.

    Args:
        config: the search.
        base: the settings every trial shares.
        data: :func:`data_fingerprint` of the clips; a study records it and resumes only on the same clips.

    Raises:
        ValueError: the existing study was run with other settings that shape its objective
            (model, folds, epochs, metric, ...) or on other clips, so its values would not be comparable.
    """
    import optuna

    storage = config.storage or default_storage()
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=MEDIAN_STARTUP_TRIALS) if config.pruner == "median"
              else optuna.pruners.NopPruner())
    # Heartbeats: a trial whose worker was killed (kill -9, a lost machine) does not stay RUNNING
    # forever; the next optimize() marks it FAIL and its MLflow run KILLED.
    with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna since 2.9
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        rdb = _open_storage(storage)
    study = optuna.create_study(study_name=config.study_name, storage=rdb, pruner=pruner,
                                direction="maximize", load_if_exists=True)
    objective = {**{f: getattr(base, f) for f in OBJECTIVE_FIELDS}, "metric": config.metric}
    before = study.user_attrs.get("objective")
    if before is not None:  # a study from before a setting existed ran with that setting's default
        defaults = {f.name: f.default for f in dataclasses.fields(base) if f.name in objective}
        before = {**defaults, **before}
    if data:
        recorded = study.user_attrs.get("data")
        if recorded is None and not study.trials:
            study.set_user_attr("data", data)
        elif recorded != data:
            raise ValueError(
                f"study_name={config.study_name!r} in {redact(storage)} was run on other clips (their fingerprint: "
                f"{recorded or 'not recorded, a study from before fingerprints'} there, {data} here): its trials' "
                f"values are not comparable with these; use another study_name for this data")
    if before is None:
        study.set_user_attr("objective", objective)
    elif before != objective:
        diff = ", ".join(f"{k}: {before.get(k)!r} there, {v!r} here"
                         for k, v in objective.items() if before.get(k) != v)
        raise ValueError(f"study_name={config.study_name!r} in {redact(storage)} was run with other settings ({diff}); "
                         "use the same settings to resume it, or another study_name")
    n_before = len(study.trials)
    # Seeded afresh per call: offsetting by the trials already there keeps a resumed study
    # from replaying its first random points.
    study.sampler = optuna.samplers.TPESampler(seed=config.sampler_seed + n_before)
    logger.info("%s study %r in %s (%d trials so far)", "Resuming" if n_before else "Created",
                config.study_name, redact(storage), n_before)
    return study


def _end_stale_trial_run(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """A trial Optuna found without a heartbeat: its nested MLflow run ends KILLED, saying why."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    run_id = trial.user_attrs.get("mlflow_run_id")
    logger.warning("trial %d of study %r had no heartbeat for %d s (its worker stopped): marked FAIL",
                   trial.number, study.study_name, GRACE_S)
    if not run_id:
        return
    try:
        client = MlflowClient()
        client.set_tag(run_id, "trial_state", "FAIL")
        client.set_tag(run_id, "error", f"the worker stopped: no heartbeat for {GRACE_S} s")
        client.set_terminated(run_id, "KILLED")
    except MlflowException as exc:  # the run may live in another tracking store
        logger.warning("could not end trial %d's run %s: %s", trial.number, run_id, exc.message)


def tune(examples: LabelledAudio, config: TuneConfig, base: FinetuneConfig, data_name: str = "",
         encoder_factory: EncoderFactory | None = None, progress: bool = True) -> TuneResult:
    """Run ``config.n_trials`` trials of the fine-tune over the same in-memory clips.

    Call it inside an active MLflow run: that run becomes the parent of one nested run per
    trial. Summarise the result on the parent with :func:`log_result`.

    Args:
        examples: the labelled clips, loaded once (:func:`heardet.approaches.finetune.train.prepare_examples`).
        config: the search.
        base: the fine-tune settings every trial shares; its ``encoder_lr``, ``head_lr`` and
            ``dropout`` are replaced by the sampled values.
        data_name: logged as each trial's ``data`` parameter.
        encoder_factory: as for :func:`heardet.approaches.finetune.train.cross_validate`; default loads
            ``base.model`` once and hands every trial a fresh copy.
        progress: show tqdm bars (trials, folds, steps).

    Raises:
        ValueError: the folds do not fit the data, or the study exists with other settings or other clips.
    """
    from heardet.cv import folds

    folds(examples.labels, base.n_folds, base.seed, examples.voices or None)  # fail now, not once per trial
    check_stage_b(config, base.top_layers)
    study = open_study(config, base, data_fingerprint(examples))
    point = config.start_point()
    if point and not any(t.params == point for t in study.trials):
        study.enqueue_trial(point)  # the next trial of this call evaluates it before the sampler explores
        logger.info("first trial: %s", ", ".join(f"{k}={v:g}" for k, v in point.items()))
    numbers: list[int] = []
    objective = _objective(examples, config, base, encoder_factory or _cached_factory(), data_name, progress,
                           numbers)
    started = time.perf_counter()
    study.optimize(objective, n_trials=config.n_trials, timeout=config.timeout or None, catch=(Exception,),
                   callbacks=[_progress_logger(config, numbers)], show_progress_bar=progress)
    seconds = time.perf_counter() - started
    trials = tuple(t for t in study.get_trials(deepcopy=False) if t.number in set(numbers))
    best, top, selection = select_trial(study, config)
    best_run = best.user_attrs.get("mlflow_run_id") if best else None
    storage = redact(config.storage or default_storage())
    return TuneResult(study, trials, best, best_run, storage, seconds, top, selection)


def select_trial(study: optuna.Study, config: TuneConfig) -> tuple[optuna.trial.FrozenTrial | None,
                                                                   optuna.trial.FrozenTrial | None, str]:
    """The complete trial a search hands on, the highest complete trial, and why the first was chosen.

    With ``config.select="best"`` both are the highest (Optuna's best trial). With ``"one_se"`` the start
    point's trial (:attr:`TuneConfig.start`) is handed on unless the highest trial's value exceeds its value by
    more than one standard error of the highest trial's per-fold values (their sample standard deviation over
    the square root of the folds): the one-standard-error rule of model selection, with the known point in the
    place of the simplest model. Where that cannot be judged (no complete start trial, fewer than two folds, a
    trial from before per-fold values were kept) the highest is handed on, and the reason says so.
    """
    try:
        top = study.best_trial
    except ValueError:  # no complete trial in the whole study
        return None, None, "no trial completed"
    highest = f"the highest {config.metric} ({top.value:.4f}, trial {top.number})"
    if config.select == "best":
        return top, top, highest
    import optuna

    point = config.start_point()
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    start = next((t for t in complete if t.params == point), None)  # as tune() finds it before enqueueing
    if start is None:
        return top, top, f"{highest}: the start point has no complete trial to keep"
    if start.number == top.number:
        return top, top, f"{highest}, the start point"
    folds = top.user_attrs.get("fold_values") or []
    if len(folds) < 2:
        return top, top, f"{highest}: its per-fold values are not recorded, so its lead cannot be judged"
    error = statistics.stdev(folds) / len(folds) ** 0.5
    lead = top.value - start.value
    if lead > error:
        return top, top, (f"{highest}: it leads the start point (trial {start.number}, {start.value:.4f}) by "
                          f"{lead:.4f}, more than one standard error of its {len(folds)} folds ({error:.4f})")
    return start, top, (f"the start point (trial {start.number}, {config.metric} {start.value:.4f}): the highest, "
                        f"trial {top.number} ({top.value:.4f}), leads it by {lead:.4f}, within one standard error of "
                        f"its {len(folds)} folds ({error:.4f})")


def log_stage_seconds(extra: dict, per_fold: bool = True) -> None:
    """Training time per stage of a cross-validation on cached states: ``cv_encode_seconds`` and, with
    ``per_fold`` (where :func:`heardet.mlops.tracking.log_cv` does not already log them),
    ``cv_fold_head_seconds`` (stage a) and ``cv_fold_top_seconds`` (stage b) per fold."""
    import mlflow

    if extra.get("encode_seconds"):
        mlflow.log_metric("cv_encode_seconds", float(extra["encode_seconds"][0]))
    for name in ("head_seconds", "top_seconds") if per_fold else ():
        for fold, value in enumerate(extra.get(name, [])):
            mlflow.log_metric(f"cv_fold_{name}", float(value), step=fold)


def _cached_factory() -> EncoderFactory:
    """Load the Whisper checkpoint once per study; each call returns an independent copy."""
    bundles: dict[str, Any] = {}

    def factory(name: str, dropout: float):
        from heardet.approaches.finetune.model import load_pretrained
        from heardet.whisper.hub import load_whisper

        if name not in bundles:
            bundles[name] = load_whisper(name)
        model, feature_extractor = load_pretrained(bundles[name], dropout)
        return copy.deepcopy(model), feature_extractor  # the classifier shares the cached encoder

    return factory


def _objective(examples: LabelledAudio, config: TuneConfig, base: FinetuneConfig, encoder_factory: EncoderFactory,
               data_name: str, progress: bool, numbers: list[int]) -> Callable[[optuna.Trial], float]:
    aggregate = METRICS[config.metric]

    def objective(trial: optuna.Trial) -> float:
        import mlflow
        import optuna

        # Looked up per call, so that a test can replace train.cross_validate.
        from heardet.approaches.finetune import train

        numbers.append(trial.number)
        sampled = {name: trial.suggest_float(name, lo, hi, log=log)
                   for name, (lo, hi, log) in config.search_space().items()}
        trial.set_user_attr("fixed_params", config.fixed)
        ft_config = dataclasses.replace(base, **config.fixed, **sampled)
        run = mlflow.start_run(nested=True, run_name=f"trial-{trial.number}")
        trial.set_user_attr("mlflow_run_id", run.info.run_id)
        status = "FAILED"
        try:
            mlflow.set_tags({"approach": "finetune", "trial_number": str(trial.number),
                             "parent": config.study_name, "trial_state": "RUNNING"})
            mlflow.log_params({**dataclasses.asdict(ft_config), "data": data_name})
            f1: list[float] = []

            def on_step(fold: int | None, step: int, loss: float) -> None:
                mlflow.log_metric(f"train_loss_fold{fold}", loss, step=step)

            def on_fold(fold: int, val_loss: float, scores) -> None:
                f1.append(scores.macro_f1)
                mlflow.log_metrics({"cv_fold_macro_f1": scores.macro_f1, "cv_fold_val_loss": val_loss}, step=fold)
                trial.report(aggregate(f1), step=fold)
                if trial.should_prune():
                    mlflow.set_tag("pruned_after_fold", str(fold))
                    raise optuna.TrialPruned(f"{config.metric} {aggregate(f1):.4f} after fold {fold} is below "
                                             "the median of earlier trials")

            cv = train.cross_validate(examples, config=ft_config, encoder_factory=encoder_factory,
                                      progress=progress, on_step=on_step, on_fold=on_fold).result
            value = float(aggregate(cv.fold_f1))
            trial.set_user_attr("fold_values", [float(f) for f in cv.fold_f1])  # select_trial's standard error
            mlflow.log_metrics({**{name: float(fn(cv.fold_f1)) for name, fn in METRICS.items()},
                                "cv_macro_f1_std": cv.std_f1, "cv_threshold": cv.threshold})
            log_stage_seconds(cv.extra)
            mlflow.set_tag("trial_state", "COMPLETE")
            status = "FINISHED"
            return value
        except optuna.TrialPruned:
            mlflow.set_tag("trial_state", "PRUNED")
            status = "FINISHED"  # stopped on purpose, not broken
            raise
        except Exception as exc:
            mlflow.set_tags({"trial_state": "FAIL", "error": f"{type(exc).__name__}: {exc}"[:ERROR_TAG_CHARS]})
            mlflow.log_text(traceback.format_exc(), "error.txt")
            raise  # Optuna marks the trial FAIL; optimize(catch=...) goes on with the next
        except BaseException:
            status = "KILLED"
            raise
        finally:
            mlflow.end_run(status)

    return objective


def _progress_logger(config: TuneConfig,
                     numbers: list[int]) -> Callable[[optuna.Study, optuna.trial.FrozenTrial], None]:
    def log_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        try:
            best = f"highest {study.best_value:.4f} (trial {study.best_trial.number})"
        except ValueError:
            best = "no complete trial yet"
        value = f"{trial.value:.4f}" if trial.value is not None else "-"
        params = ", ".join(f"{k}={v:.3g}" for k, v in trial.params.items())
        logger.info("trial %d (%d of %d) %s: %s=%s [%s]; %s", trial.number, len(numbers), config.n_trials,
                    trial.state.name, config.metric, value, params, best)

    return log_trial


def log_result(result: TuneResult, config: TuneConfig) -> None:
    """Summarise a search on the active (parent) run.

    Logs ``n_complete`` / ``n_pruned`` / ``n_failed`` (this call's trials), ``n_trials_study``,
    ``tune_seconds``; for the trial the search hands on (:func:`select_trial`) ``best_encoder_lr`` /
    ``best_head_lr`` / ``best_dropout`` params, ``best_value``, tags ``best_trial_run_id``, ``best_trial_number``
    and ``selection`` (why that trial), and tags that trial's run ``best_trial=true``; the highest trial's
    ``top_value`` and ``top_trial_number``; Optuna's plots under ``plots/``.
    """
    import mlflow

    from heardet.mlops.tracking import log_params

    study = result.study
    mlflow.set_tags({"optuna_study": study.study_name, "optuna_storage": result.storage})
    mlflow.log_metrics({"n_complete": result.count("COMPLETE"), "n_pruned": result.count("PRUNED"),
                        "n_failed": result.count("FAIL"), "n_trials_study": len(study.trials),
                        "tune_seconds": result.seconds})
    best = result.best_trial
    if best is None:
        mlflow.set_tag("best_trial", "none: no trial completed")
    else:
        log_params({f"best_{name}": value for name, value in result.best_params.items()})
        top = result.top_trial
        mlflow.log_metrics({"best_value": float(best.value), "top_value": float(top.value)})
        mlflow.set_tags({"best_trial_number": str(best.number), "top_trial_number": str(top.number),
                         "selection": result.selection})
        if result.best_run_id:
            mlflow.set_tag("best_trial_run_id", result.best_run_id)
            _mark_best_run(study, result.best_run_id)
        logger.info("handed on %s: %s", ", ".join(f"{k}={v:.3g}" for k, v in best.params.items()),
                    result.selection)
    figures, notes = study_figures(study, config.metric)
    for name, figure in figures.items():
        mlflow.log_figure(figure, f"plots/{name}.png")
    if notes:
        mlflow.set_tag("plots_skipped", "; ".join(notes))
        for note in notes:
            logger.info("plot skipped: %s", note)


def _mark_best_run(study: optuna.Study, run_id: str) -> None:
    """Tag the best trial's run ``best_trial=true`` and take the tag off the previous best."""
    import mlflow

    client = mlflow.MlflowClient()
    previous = study.user_attrs.get("best_trial_run_id")
    try:
        if previous and previous != run_id:
            client.set_tag(previous, "best_trial", "false")
        client.set_tag(run_id, "best_trial", "true")
    except mlflow.exceptions.MlflowException as exc:  # e.g. a trial another worker logged elsewhere
        logger.warning("could not tag the best trial's run %s: %s", run_id, exc)
    study.set_user_attr("best_trial_run_id", run_id)


def study_figures(study: optuna.Study, metric: str) -> tuple[dict[str, Any], list[str]]:
    """The optimisation history, parameter importances and intermediate values of ``study``.

    Returns:
        ``{name: Figure}``, and a note for every figure skipped (too few trials, or it failed).
    """
    import optuna

    from heardet.mlops import plots

    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    curves = {t.number: dict(t.intermediate_values) for t in study.trials if t.intermediate_values}

    def importance():
        with warnings.catch_warnings():  # "importances will be equal" with few or constant trials
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return plots.importances(optuna.importance.get_param_importances(study))

    makers = {  # name: (make, enough trials?, what it needs)
        "optimization_history": (lambda: plots.optimization_history([t.number for t in complete],
                                                                     [t.value for t in complete], metric),
                                 len(complete) >= 1, ">= 1 complete trial"),
        "param_importances": (importance, len(complete) >= 2, ">= 2 complete trials"),
        "intermediate_values": (lambda: plots.intermediate_values(curves), len(curves) >= 1,
                                ">= 1 trial with fold values"),
    }
    figures, notes = {}, []
    for name, (make, enough, needs) in makers.items():
        if not enough:
            notes.append(f"{name} needs {needs} (the study has {len(complete)} complete)")
            continue
        try:
            figures[name] = make()
        except Exception as exc:  # a plot never fails the search (e.g. importances of constant params)
            notes.append(f"{name} failed: {type(exc).__name__}: {exc}")
    return figures, notes


def best_params(run_id: str) -> dict[str, float]:
    """The best ``encoder_lr``, ``head_lr`` and ``dropout`` a ``tune`` run found.

    ``dataclasses.replace(finetune_config, **best_params(run_id))`` applies them.

    Raises:
        ValueError: no such run, or it is not a tune run with a complete trial.
    """
    import mlflow

    try:
        run = mlflow.MlflowClient().get_run(run_id)
    except mlflow.exceptions.MlflowException as exc:
        raise ValueError(f"params_from={run_id!r}: no such run in {mlflow.get_tracking_uri()} "
                         f"({exc.message}); pass the run id of a `tune` run") from exc
    params = run.data.params
    missing = [f"best_{name}" for name in TUNED if f"best_{name}" not in params]
    if missing:
        raise ValueError(f"params_from={run_id!r}: run has no {', '.join(missing)} "
                         f"(tag approach={run.data.tags.get('approach')!r}); pass the run id of a `tune` run "
                         "in which at least one trial completed")
    return {name: float(params[f"best_{name}"]) for name in TUNED}
