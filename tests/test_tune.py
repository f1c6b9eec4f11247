"""The ``tune`` entry point: an Optuna study over a tiny random Whisper, 2 folds, a real MLflow
store and a real SQLite Optuna storage; one parent run, one nested run per trial."""

import mlflow
import numpy as np
import optuna
import pytest
from click.testing import CliRunner
from test_approaches_text import entrypoint, run_entrypoint

FAST = ["--n-folds", "2", "--max-seconds", "2", "--batch-size", "2", "--head-lr-min", "1e-3",
        "--head-lr-max", "1e-2", "--sampler-seed", "0"]


def tune_args(dataset, model, *extra):
    return ["--data", str(dataset), "--model", str(model), *FAST, *extra]


def trial_runs(parent_id):
    return mlflow.search_runs(filter_string=f"tags.mlflow.parentRunId = '{parent_id}'", order_by=["start_time ASC"],
                              output_format="list")


def storage_of(tmp_path):
    return f"sqlite:///{tmp_path / 'optuna.db'}"


def test_a_two_trial_study_logs_a_parent_and_one_nested_run_per_trial(tiny_hf_whisper, phrase_dataset,
                                                                      mlflow_store, tmp_path):
    parent = run_entrypoint("tune", tune_args(phrase_dataset, tiny_hf_whisper, "--n-trials", "2",
                                              "--study-name", "two"))
    assert parent.data.tags["approach"] == "tune"
    trials = trial_runs(parent.info.run_id)
    assert len(trials) == 2, "one nested run per trial"
    client = mlflow.MlflowClient()
    for n, run in enumerate(trials):
        assert run.info.run_name == f"trial-{n}" and run.data.tags["trial_number"] == str(n)
        assert run.data.tags["approach"] == "finetune" and run.data.tags["parent"] == "two"
        assert run.data.tags["trial_state"] == "COMPLETE" and run.info.status == "FINISHED"
        assert {"encoder_lr", "head_lr", "dropout"} <= set(run.data.params), run.data.params
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "cv_fold_macro_f1"))
        assert steps == [0, 1], "one F1 per fold"
    assert parent.data.metrics["n_complete"] == 2 and parent.data.metrics["n_failed"] == 0
    best = client.get_run(parent.data.tags["best_trial_run_id"])
    assert best.data.tags["best_trial"] == "true"
    assert parent.data.metrics["best_value"] == best.data.metrics["cv_macro_f1_mean"]
    assert float(parent.data.params["best_dropout"]) == float(best.data.params["dropout"])
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert {"plots/optimization_history.png", "plots/param_importances.png"} <= plots, plots
    assert (tmp_path / "optuna.db").exists(), "default storage sits next to mlflow.db"


def test_a_trial_that_raises_is_marked_failed_and_the_study_goes_on(tiny_hf_whisper, phrase_dataset,
                                                                    mlflow_store, monkeypatch):
    import heardet.approaches.finetune.train

    real, calls = heardet.approaches.finetune.train.cross_validate, []

    def first_call_breaks(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("out of memory (simulated)")
        return real(*args, **kwargs)

    monkeypatch.setattr(heardet.approaches.finetune.train, "cross_validate", first_call_breaks)
    parent = run_entrypoint("tune", tune_args(phrase_dataset, tiny_hf_whisper, "--n-trials", "2"))
    failed, done = trial_runs(parent.info.run_id)
    assert failed.info.status == "FAILED" and failed.data.tags["trial_state"] == "FAIL"
    assert "out of memory (simulated)" in failed.data.tags["error"]
    assert done.info.status == "FINISHED" and done.data.tags["trial_state"] == "COMPLETE"
    assert parent.data.metrics["n_failed"] == 1 and parent.data.metrics["n_complete"] == 1
    assert parent.data.tags["best_trial_run_id"] == done.info.run_id
    assert "param_importances" in parent.data.tags["plots_skipped"], "importances need 2 complete trials"


def test_rerunning_with_the_same_study_name_adds_trials_to_that_study(tiny_hf_whisper, phrase_dataset,
                                                                     mlflow_store, tmp_path):
    storage = storage_of(tmp_path / "elsewhere")
    (tmp_path / "elsewhere").mkdir()
    args = tune_args(phrase_dataset, tiny_hf_whisper, "--n-trials", "1", "--study-name", "resumed",
                     "--storage", storage, "--pruner", "none")
    first = run_entrypoint("tune", args)
    second = run_entrypoint("tune", args)
    trials = optuna.load_study(study_name="resumed", storage=storage).trials
    assert [t.number for t in trials] == [0, 1], "the second run adds trial 1 to the same study"
    assert trials[0].params != trials[1].params, "a resumed study does not replay its first point"
    assert first.data.metrics["n_trials_study"] == 1 and second.data.metrics["n_trials_study"] == 2
    assert [r.data.tags["trial_number"] for r in trial_runs(second.info.run_id)] == ["1"]


def test_resuming_with_other_fold_settings_is_refused(tmp_path):
    from heardet.approaches.finetune.train import FinetuneConfig
    from heardet.approaches.finetune.tune import TuneConfig, open_study

    config = TuneConfig(study_name="s", storage=storage_of(tmp_path))
    open_study(config, FinetuneConfig(n_folds=2))
    with pytest.raises(ValueError, match="n_folds: 2 there, 3 here"):
        open_study(config, FinetuneConfig(n_folds=3))


def test_a_study_resumes_on_its_own_clips_only(tmp_path):
    from heardet.approaches.finetune.train import FinetuneConfig, LabelledAudio
    from heardet.approaches.finetune.tune import TuneConfig, data_fingerprint, open_study

    rng = np.random.default_rng(0)
    audios = tuple(rng.standard_normal(1600).astype(np.float32) for _ in range(4))
    clips = LabelledAudio(("a", "b", "c", "d"), audios, np.array([0, 1, 0, 1]), ((), ((0.1, 0.2),), (), ((0.0, 0.1),)))
    same = LabelledAudio(clips.ids, tuple(a.copy() for a in audios), clips.labels.copy(), clips.bounds)
    other = LabelledAudio(clips.ids, (audios[0] * 0.5, *audios[1:]), clips.labels, clips.bounds)  # one clip's audio
    assert data_fingerprint(clips) == data_fingerprint(same) != data_fingerprint(other)
    config, base = TuneConfig(study_name="s", storage=storage_of(tmp_path)), FinetuneConfig(n_folds=2)
    study = open_study(config, base, data_fingerprint(clips))
    open_study(config, base, data_fingerprint(same))
    with pytest.raises(ValueError, match=rf"study_name='s' .* was run on other clips .*{data_fingerprint(other)} here"):
        open_study(config, base, data_fingerprint(other))
    study.enqueue_trial({"head_lr": 1e-3})  # a trial from before fingerprints were recorded
    study.set_user_attr("data", None)
    with pytest.raises(ValueError, match="not recorded"):
        open_study(config, base, data_fingerprint(clips))


def test_a_study_from_before_a_setting_existed_resumes_when_this_run_keeps_its_default(tmp_path):
    from heardet.approaches.finetune.train import FinetuneConfig
    from heardet.approaches.finetune.tune import TuneConfig, open_study

    config = TuneConfig(study_name="old", storage=storage_of(tmp_path))
    study = open_study(config, FinetuneConfig(n_folds=2))
    older = {k: v for k, v in study.user_attrs["objective"].items() if k not in ("top_layers", "top_epochs")}
    study.set_user_attr("objective", older)  # as a study made before stage (b) existed stored it
    open_study(config, FinetuneConfig(n_folds=2))
    with pytest.raises(ValueError, match="top_layers: 0 there, 1 here"):
        open_study(config, FinetuneConfig(n_folds=2, top_layers=1))


def test_the_first_trial_starts_at_the_given_point_once_per_study(tiny_hf_whisper, phrase_dataset, mlflow_store,
                                                                  tmp_path):
    args = tune_args(phrase_dataset, tiny_hf_whisper, "--n-trials", "1", "--study-name", "started",
                     "--start", "encoder_lr=3e-5,head_lr=2e-3,dropout=0.2")
    (first,) = trial_runs(run_entrypoint("tune", args).info.run_id)
    assert (float(first.data.params["encoder_lr"]), float(first.data.params["head_lr"]),
            float(first.data.params["dropout"])) == (3e-5, 2e-3, 0.2)
    (second,) = trial_runs(run_entrypoint("tune", args).info.run_id)
    assert float(second.data.params["head_lr"]) != 2e-3, "the study had that point: the sampler explores"
    result = CliRunner().invoke(entrypoint("tune"), tune_args(phrase_dataset, tiny_hf_whisper,
                                                              "--start", "head_lr=1"))
    assert result.exit_code != 0 and "TuneConfig.start='head_lr=1' is invalid" in result.output, result.output


def test_trials_with_stage_b_sample_the_encoder_lr_and_a_frozen_search_for_them_is_refused(
        tiny_hf_whisper, phrase_dataset, mlflow_store):
    parent = run_entrypoint("tune", tune_args(phrase_dataset, tiny_hf_whisper, "--n-trials", "1", "--top-layers", "1",
                                              "--top-epochs", "1", "--encoder-lr-min", "1e-5",
                                              "--encoder-lr-max", "5e-5", "--study-name", "stage-b"))
    (trial,) = trial_runs(parent.info.run_id)
    assert trial.data.tags["trial_state"] == "COMPLETE" and trial.data.params["top_layers"] == "1"
    assert 1e-5 <= float(trial.data.params["encoder_lr"]) <= 5e-5
    assert len(trial.data.metrics) and "cv_fold_top_seconds" in trial.data.metrics, trial.data.metrics
    result = CliRunner().invoke(entrypoint("tune"), tune_args(
        phrase_dataset, tiny_hf_whisper, "--n-trials", "1", "--top-layers", "1", "--encoder-lr-min", "0",
        "--encoder-lr-max", "0", "--study-name", "frozen-b"))
    assert result.exit_code != 0 and "top_layers=1 trains the encoder's top layers" in result.output, result.output


def test_a_trial_below_the_median_after_a_fold_is_pruned(mlflow_store, monkeypatch):
    import numpy as np

    import heardet.approaches.finetune.train
    from heardet.approaches.finetune.train import (
        FinetuneConfig,
        FinetuneCV,
        LabelledAudio,
    )
    from heardet.approaches.finetune.tune import (
        MEDIAN_STARTUP_TRIALS,
        TuneConfig,
        log_result,
        tune,
    )
    from heardet.cv import CVResult
    from heardet.metrics import score

    calls = []

    def scripted_cv(examples, config, on_fold, **kwargs):
        labels = examples.labels
        calls.append(1)
        good = len(calls) <= MEDIAN_STARTUP_TRIALS  # the first trials do well, the next badly
        folds = []
        for fold in range(config.n_folds):
            folds.append(score(labels, labels if good else 1 - labels))
            on_fold(fold, 0.5, folds[-1])
        return FinetuneCV(CVResult(tuple(folds), np.zeros(len(labels))))

    monkeypatch.setattr(heardet.approaches.finetune.train, "cross_validate", scripted_cv)
    examples = LabelledAudio.from_arrays([np.zeros(1600, np.float32)] * 4, labels=[0, 1, 0, 1])
    config = TuneConfig(n_trials=MEDIAN_STARTUP_TRIALS + 1, study_name="pruned")
    with mlflow.start_run() as parent:
        result = tune(examples, config, FinetuneConfig(n_folds=2), progress=False)
        log_result(result, config)
    last = trial_runs(parent.info.run_id)[-1]
    assert last.data.tags["trial_state"] == "PRUNED" and last.data.tags["pruned_after_fold"] == "0"
    assert result.count("PRUNED") == 1 and result.count("COMPLETE") == MEDIAN_STARTUP_TRIALS
    assert mlflow.get_run(parent.info.run_id).data.metrics["n_pruned"] == 1


def study_of(*trials):
    """An in-memory study of complete trials ``(head_lr, value, fold values or None)``."""
    study = optuna.create_study(direction="maximize")
    space = {"head_lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)}
    for head_lr, value, folds in trials:
        study.add_trial(optuna.trial.create_trial(params={"head_lr": head_lr}, distributions=space, value=value,
                                                  user_attrs={"fold_values": folds} if folds else {}))
    return study


@pytest.mark.parametrize(("trials", "select", "chosen", "reason"), [
    # The full profile's end-to-end tune: trial 3 led the start point by 0.0020; its folds' standard error is 0.004.
    ([(1e-3, 0.9399, [0.9379, 0.9420]), (3e-3, 0.9300, [0.93, 0.93]), (7e-4, 0.9419, [0.9379, 0.9460])],
     "one_se", 1e-3, "within one standard error of its 2 folds (0.0040)"),
    ([(1e-3, 0.9399, [0.9379, 0.9420]), (7e-4, 0.9419, [0.9379, 0.9460])], "best", 7e-4, "the highest"),
    ([(1e-3, 0.9399, [0.9379, 0.9420]), (7e-4, 0.9600, [0.9580, 0.9620])], "one_se", 7e-4,
     "more than one standard error of its 2 folds (0.0020)"),
    ([(1e-3, 0.9399, None), (7e-4, 0.9419, None)], "one_se", 7e-4, "per-fold values are not recorded"),
    ([(2e-3, 0.9399, [0.94, 0.94]), (7e-4, 0.9419, [0.9379, 0.9460])], "one_se", 7e-4,
     "the start point has no complete trial"),
    ([(1e-3, 0.9500, [0.95, 0.95]), (7e-4, 0.9419, [0.9379, 0.9460])], "one_se", 1e-3, "the start point"),
])
def test_one_se_keeps_the_start_point_unless_a_trial_leads_it_by_more_than_its_folds_noise(trials, select, chosen,
                                                                                          reason):
    from heardet.approaches.finetune.tune import TuneConfig, select_trial

    config = TuneConfig(encoder_lr_min=0, encoder_lr_max=0, start="head_lr=1e-3", select=select)
    best, top, selection = select_trial(study_of(*trials), config)
    assert best.params["head_lr"] == chosen, selection
    assert top.value == max(value for _, value, _ in trials)
    assert reason in selection, selection


def test_one_se_needs_a_start_point():
    from heardet.approaches.finetune.tune import TuneConfig

    with pytest.raises(ValueError, match="TuneConfig.select='one_se' is invalid.*together with a start point"):
        TuneConfig(select="one_se")


def test_the_tune_hands_on_the_start_point_its_parent_run_says_why_and_the_fine_tune_reads_it(mlflow_store,
                                                                                             monkeypatch):
    import types

    import heardet.approaches.finetune.train
    from heardet.approaches.finetune.train import FinetuneConfig, FinetuneCV, LabelledAudio
    from heardet.approaches.finetune.tune import TuneConfig, best_params, log_result, tune
    from heardet.cv import CVResult

    def scripted_cv(examples, config, on_fold, **kwargs):  # the start point 0.940, any other point 0.942
        folds = [0.9379, 0.9420] if config.head_lr == 1e-3 else [0.9379, 0.9460]
        for fold, f1 in enumerate(folds):
            on_fold(fold, 0.5, types.SimpleNamespace(macro_f1=f1))
        return FinetuneCV(CVResult(tuple(types.SimpleNamespace(macro_f1=f1) for f1 in folds),
                                   np.zeros(len(examples.labels))))

    monkeypatch.setattr(heardet.approaches.finetune.train, "cross_validate", scripted_cv)
    examples = LabelledAudio.from_arrays([np.zeros(1600, np.float32)] * 4, labels=[0, 1, 0, 1])
    config = TuneConfig(encoder_lr_min=0, encoder_lr_max=0, n_trials=3, pruner="none", study_name="noise",
                        start="head_lr=1e-3,dropout=0.2", select="one_se")
    with mlflow.start_run() as parent:
        result = tune(examples, config, FinetuneConfig(n_folds=2, encoder_lr=0.0), progress=False)
        log_result(result, config)
    assert result.top_trial.number != 0 and result.best_trial.number == 0, result.selection
    run = mlflow.get_run(parent.info.run_id)
    assert run.data.tags["best_trial_number"] == "0" and run.data.tags["top_trial_number"] != "0"
    assert "within one standard error" in run.data.tags["selection"], run.data.tags["selection"]
    assert run.data.metrics["top_value"] > run.data.metrics["best_value"] == pytest.approx(0.93995)
    assert best_params(parent.info.run_id) == {"encoder_lr": 0.0, "head_lr": 1e-3, "dropout": 0.2}
    assert mlflow.get_run(run.data.tags["best_trial_run_id"]).data.tags["best_trial"] == "true"


def test_best_params_round_trip_through_the_parent_run(mlflow_store):
    from heardet.approaches.finetune.tune import best_params

    with mlflow.start_run() as run:
        mlflow.log_params({"best_encoder_lr": 3.0e-5, "best_head_lr": 0.001234567891, "best_dropout": 0.25})
    assert best_params(run.info.run_id) == {"encoder_lr": 3.0e-5, "head_lr": 0.001234567891, "dropout": 0.25}


def test_best_params_of_a_run_that_is_not_a_tune_run_names_the_missing_params(mlflow_store):
    from heardet.approaches.finetune.tune import best_params

    with mlflow.start_run() as run:
        mlflow.set_tag("approach", "finetune")
    with pytest.raises(ValueError, match="best_encoder_lr.*approach='finetune'"):
        best_params(run.info.run_id)
    with pytest.raises(ValueError, match="no such run"):
        best_params("0" * 32)


@pytest.mark.parametrize("field, value", [("dropout_max", 1.5), ("encoder_lr_min", 0.0), ("pruner", "hyperband"),
                                          ("metric", "accuracy"), ("n_trials", 0)])
def test_a_config_error_names_the_field_and_what_is_allowed(field, value):
    from heardet.approaches.finetune.tune import TuneConfig

    with pytest.raises(ValueError, match=rf"TuneConfig\.{field}=.* is invalid; allowed: "):
        TuneConfig(**{field: value})


def test_a_max_below_its_min_is_refused():
    from heardet.approaches.finetune.tune import TuneConfig

    with pytest.raises(ValueError, match=r"head_lr_max=0.0001 is invalid; allowed: a number >= head_lr_min \(0.01\)"):
        TuneConfig(head_lr_min=1e-2, head_lr_max=1e-4)


def test_the_entry_point_reports_a_bad_range_by_name(phrase_dataset, tiny_hf_whisper, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # should it reach MLflow after all, its store lands here
    result = CliRunner().invoke(entrypoint("tune"), tune_args(phrase_dataset, tiny_hf_whisper, "--dropout-max", "1"))
    assert result.exit_code == 1 and "dropout_max=1.0 is invalid" in result.output, result.output


@pytest.mark.parametrize("tracking, storage", [
    ("sqlite:////srv/mlflow/mlflow.db", "sqlite:////srv/mlflow/optuna.db"),
    ("sqlite:///mlflow.db", "sqlite:///optuna.db"),
    ("http://tracking:5000", "sqlite:///optuna.db"),
])
def test_default_storage_sits_next_to_a_sqlite_tracking_store(tracking, storage):
    from heardet.approaches.finetune.tune import default_storage

    assert default_storage(tracking) == storage


def test_a_storage_password_is_not_logged():
    from heardet.approaches.finetune.tune import redact

    assert "s3cret" not in redact("postgresql://tuner:s3cret@db.internal:5432/optuna")


def test_a_frozen_search_trains_with_the_outside_loss_and_one_that_trains_the_encoder_is_refused(
        tiny_hf_whisper, phrase_dataset, mlflow_store):
    parent = run_entrypoint("tune", tune_args(phrase_dataset, tiny_hf_whisper, "--n-trials", "1", "--encoder-lr-min",
                                              "0", "--encoder-lr-max", "0", "--outside-weight", "1",
                                              "--study-name", "outside"))
    (trial,) = trial_runs(parent.info.run_id)
    assert trial.data.tags["trial_state"] == "COMPLETE", trial.data.tags
    assert float(trial.data.params["outside_weight"]) == 1.0 and float(trial.data.params["encoder_lr"]) == 0.0
    result = CliRunner().invoke(entrypoint("tune"), tune_args(phrase_dataset, tiny_hf_whisper, "--n-trials", "1",
                                                              "--outside-weight", "1", "--study-name", "outside-b"))
    assert result.exit_code != 0 and "FinetuneConfig.outside_weight=1.0 is invalid" in result.output, result.output
