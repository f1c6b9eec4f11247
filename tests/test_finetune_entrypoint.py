"""Approach 3 through its entry point: a tiny random Whisper, 2 folds, a real MLflow store,
a registered pyfunc that reloads and isolates a broken row."""

import mlflow
import pandas as pd
from test_approaches_text import run_entrypoint


def test_finetune_entrypoint_logs_folds_and_registers_a_reloadable_model(tiny_hf_whisper, phrase_dataset,
                                                                          mlflow_store, tmp_path):
    run = run_entrypoint("finetune", [
        "--data", str(phrase_dataset), "--model", str(tiny_hf_whisper), "--n-folds", "2", "--max-seconds", "2",
        "--batch-size", "2", "--head-lr", "0.01", "--out", str(tmp_path / "out"), "--register-as", "heardet-finetune-tiny",
    ])
    client = mlflow.MlflowClient()
    assert run.data.tags["approach"] == "finetune" and run.data.tags["refit"] == "all"
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "cv_fold_macro_f1")) == [0, 1]
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "cv_fold_val_loss")) == [0, 1]
    assert len(client.get_metric_history(run.info.run_id, "train_loss_fold0")) == 2, "4 clips / batch 2 = 2 steps"
    assert 0 <= run.data.metrics["cv_threshold"] <= 1 and "test_macro_f1" in run.data.metrics
    assert run.data.params["encoder_lr"] == "1e-05" and run.data.params["head_lr"] == "0.01"
    submission = pd.read_csv(tmp_path / "out" / f"approach_3_{tiny_hf_whisper.name.lower()}.csv")
    assert len(submission) == 4 and set(submission.label) <= {0, 1}

    model = mlflow.pyfunc.load_model("models:/heardet-finetune-tiny/1")
    wavs = sorted((phrase_dataset / "wav_test").glob("*.wav"))
    out = model.predict(pd.DataFrame({"audio": [wavs[0].read_bytes(), b"broken", wavs[1].read_bytes()]}))
    assert out.label.tolist()[1] == -1 and "not audio" in out.error[1]
    assert set(out.label[[0, 2]]) <= {0, 1} and out.score[[0, 2]].between(0, 1).all()
    assert (out.window_end_s[[0, 2]] > 0).all()
    for row in out.itertuples():  # frame pooling (the default) says where the phrase is, for positives only
        found = row.label == 1
        assert found == (row.phrase_start_s == row.phrase_start_s), f"row {row.Index}: phrase times vs label"
        if found:
            assert row.window_start_s <= row.phrase_start_s < row.phrase_end_s <= row.window_end_s + 1e-6


def test_default_registered_name_follows_the_model_and_loeo_false_trains_no_engine_hold_out(
        tiny_hf_whisper, phrase_dataset, mlflow_store, tmp_path, monkeypatch):
    def no_hold_out(*args, **kwargs):
        raise AssertionError("--loeo false still trained the leave-one-engine-out models")

    monkeypatch.setattr("heardet.approaches.finetune.train.engine_holdout", no_hold_out)
    run_entrypoint("finetune", ["--data", str(phrase_dataset), "--model", str(tiny_hf_whisper), "--n-folds", "2",
                                "--max-seconds", "2", "--out", str(tmp_path / "out"), "--refit", "best_fold",
                                "--loeo", "false"])
    name = f"heardet-finetune-{tiny_hf_whisper.name.lower()}"
    version = mlflow.MlflowClient().get_latest_versions(name)[0]
    assert mlflow.get_run(version.run_id).data.tags["refit_fold"] in ("0", "1")


def test_params_from_a_tune_run_sets_the_learning_rates_and_dropout(tiny_hf_whisper, phrase_dataset,
                                                                    mlflow_store, tmp_path):
    with mlflow.start_run() as tune_run:
        mlflow.set_tag("approach", "tune")
        mlflow.log_params({"best_encoder_lr": 2e-5, "best_head_lr": 0.005, "best_dropout": 0.1})
    run = run_entrypoint("finetune", ["--data", str(phrase_dataset), "--model", str(tiny_hf_whisper),
                                      "--n-folds", "2", "--max-seconds", "2", "--out", str(tmp_path / "out"),
                                      "--params-from", tune_run.info.run_id])
    assert (run.data.params["encoder_lr"], run.data.params["head_lr"], run.data.params["dropout"]) == \
        ("2e-05", "0.005", "0.1")
    assert run.data.tags["params_from"] == tune_run.info.run_id
