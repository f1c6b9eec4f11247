"""Approaches 1 and 2 through their real entry points, a real MLflow store and real pyfunc
save/load; only Whisper is replaced by a fake that 'hears' the phrase in 300 Hz tones."""

import base64
import importlib.util
from pathlib import Path

import mlflow
import pandas as pd
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]


def entrypoint(name):
    spec = importlib.util.spec_from_file_location(f"ep_{name}", ROOT / "entrypoints" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def run_entrypoint(name, args):
    result = CliRunner().invoke(entrypoint(name), args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    run = mlflow.last_active_run()
    return mlflow.get_run(run.info.run_id)


def test_rule_entrypoint_logs_metrics_submission_and_registers(fake_asr, phrase_dataset, mlflow_store, tmp_path):
    run = run_entrypoint("transcribe", ["--data", str(phrase_dataset), "--out", str(tmp_path / "out")])
    assert run.data.tags["approach"] == "rule"
    assert run.data.metrics["test_macro_f1"] == 1.0 and run.data.metrics["train_macro_f1"] == 1.0
    assert run.data.params["rule"] == "не слыш"
    submission = pd.read_csv(tmp_path / "out" / "approach_1.csv")
    assert list(submission.columns) == ["id", "label"] and submission.label.tolist() == [1, 1, 0, 0]
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "plots")}
    assert "plots/confusion_test.png" in artifacts
    version = mlflow.MlflowClient().get_latest_versions("heardet-rule")[0]
    assert version.run_id == run.info.run_id


def test_transcribe_and_catboost_take_the_same_train_subsample(fake_asr, phrase_dataset, mlflow_store, tmp_path):
    import io

    def train_ids(run, artifact):
        text = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/{artifact}")
        table = pd.read_csv(io.StringIO(text))
        return sorted(table[table.split == "train"].id if "split" in table else table.id)

    rule = run_entrypoint("transcribe", ["--data", str(phrase_dataset), "--out", str(tmp_path / "out"),
                                         "--max-train-clips", "4"])
    boost = run_entrypoint("catboost_text", ["--data", str(phrase_dataset), "--out", str(tmp_path / "out"),
                                        "--max-train-clips", "4", "--n-folds", "2", "--iterations", "20"])
    picked = train_ids(rule, "transcripts/transcripts.csv")
    assert len(picked) == 4 and picked == train_ids(boost, "oof/oof_predictions.csv")
    assert rule.data.params["max_train_clips"] == "4" and boost.data.params["max_train_clips"] == "4"
    assert rule.data.metrics["test_macro_f1"] == 1.0, "every test clip is still scored"


def test_registered_rule_model_scores_bytes_and_isolates_a_broken_row(fake_asr, phrase_dataset, mlflow_store, tmp_path):
    run_entrypoint("transcribe", ["--data", str(phrase_dataset), "--out", str(tmp_path / "out")])
    model = mlflow.pyfunc.load_model("models:/heardet-rule/1")
    wavs = sorted((phrase_dataset / "wav_test").glob("*.wav"))
    frame = pd.DataFrame({"audio": [wavs[0].read_bytes(), b"not audio", base64.b64encode(wavs[3].read_bytes()).decode()]})
    out = model.predict(frame)
    assert out.label.tolist() == [1, -1, 0], out
    assert out.error[0] == "" and "not audio" in out.error[1]
    assert 0 <= out.score[2] < 0.5 and out.score[0] == 1.0


def test_pyfunc_accepts_a_path_column(fake_asr, phrase_dataset, mlflow_store, tmp_path):
    run_entrypoint("transcribe", ["--data", str(phrase_dataset), "--out", str(tmp_path / "out")])
    model = mlflow.pyfunc.load_model("models:/heardet-rule/1")
    paths = [str(p) for p in sorted((phrase_dataset / "wav_test").glob("*.wav"))] + [str(tmp_path / "missing.wav")]
    out = model.predict(pd.DataFrame({"path": paths}))
    assert out.label.tolist() == [1, 1, 0, 0, -1]
    assert "no such file" in out.error[4]


def test_catboost_entrypoint_logs_every_fold_and_a_reloadable_model(fake_asr, phrase_dataset, mlflow_store, tmp_path):
    run = run_entrypoint("catboost_text", ["--data", str(phrase_dataset), "--n-folds", "2", "--iterations", "50",
                                      "--early-stopping-rounds", "10", "--out", str(tmp_path / "out")])
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "cv_fold_macro_f1")
    assert sorted(m.step for m in history) == [0, 1]
    assert "cv_macro_f1_mean" in run.data.metrics and "cv_macro_f1_std" in run.data.metrics
    assert run.data.tags["approach"] == "catboost"
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "oof")}
    assert "oof/oof_predictions.csv" in artifacts
    plots = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "plots")}
    assert {"plots/fold_f1.png", "plots/oof_roc_pr.png"} <= plots and 0 <= run.data.metrics["cv_oof_roc_auc"] <= 1
    assert (tmp_path / "out" / "approach_2.csv").exists()
    model = mlflow.pyfunc.load_model("models:/heardet-catboost/1")
    wavs = sorted((phrase_dataset / "wav_test").glob("*.wav"))
    out = model.predict(pd.DataFrame({"audio": [w.read_bytes() for w in wavs] + [b""]}))
    assert out.label.tolist()[-1] == -1 and set(out.label[:4]) <= {0, 1}
    assert out.score[:4].between(0, 1).all()


def test_transcripts_are_reused_from_the_cache(fake_asr, phrase_dataset, mlflow_store, tmp_path):
    run_entrypoint("transcribe", ["--data", str(phrase_dataset), "--out", str(tmp_path / "out")])
    first = fake_asr[0].calls  # the entry point's transcriber (later ones belong to logged models)
    made = len(fake_asr)
    run_entrypoint("catboost_text", ["--data", str(phrase_dataset), "--n-folds", "2", "--iterations", "20",
                                "--out", str(tmp_path / "out")])
    assert first == 12 and fake_asr[made].calls == 0, "catboost must reuse the transcribe step's transcripts"


def test_evaluate_and_predict_commands_score_any_model_uri(fake_asr, phrase_dataset, mlflow_store, tmp_path):
    from heardet.cli import main

    run_entrypoint("transcribe", ["--data", str(phrase_dataset), "--out", str(tmp_path / "out")])
    result = CliRunner().invoke(main, ["evaluate", str(phrase_dataset), "--model", "models:/heardet-rule/1",
                                       "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "macro_f1 1.0000" in result.output and "(test)" in result.output

    (tmp_path / "broken.wav").write_bytes(b"RIFF....garbage")
    out_csv = tmp_path / "preds.csv"
    result = CliRunner().invoke(main, ["predict", str(phrase_dataset / "wav_test"), str(tmp_path / "broken.wav"),
                                       "--model", "models:/heardet-rule/1", "-o", str(out_csv), "--no-progress"])
    assert result.exit_code == 1, "one unreadable input, the rest scored: " + result.output
    preds = pd.read_csv(out_csv, keep_default_na=False)
    assert list(preds.columns[:4]) == ["id", "label", "score", "error"]
    assert preds.label.tolist() == [1, 1, 0, 0, -1]
    assert "broken.wav" in result.output and "1 unreadable" in result.output
    assert "corrupt or truncated WAV audio" in result.output


def test_predict_exits_1_when_nothing_could_be_read(fake_asr, phrase_dataset, mlflow_store, tmp_path):
    from heardet.cli import main

    run_entrypoint("transcribe", ["--data", str(phrase_dataset), "--out", str(tmp_path / "out")])
    (tmp_path / "broken.wav").write_bytes(b"garbage")
    result = CliRunner().invoke(main, ["predict", str(tmp_path / "broken.wav"), "--model", "models:/heardet-rule/1",
                                       "-o", str(tmp_path / "p.csv"), "--no-progress"])
    assert result.exit_code == 1


def test_a_rule_model_tolerates_decode_options_from_another_heardet_version(fake_asr):
    from heardet.approaches.rule import RuleModel

    model = RuleModel("whisper-base", "auto", {"language": "ru", "option_from_the_future": 1}, "не слыш", "не слышу")
    model.load_context(None)
    assert fake_asr[-1].options.language == "ru"
