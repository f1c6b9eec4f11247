"""Team scale, for real (marked ``integration``: `make test-integration`, and .ci/run): the stack
`heardet stack start` runs (a real PostgreSQL and a real `mlflow server` with proxied artifacts),
the main job against it, two tune workers on one PostgreSQL study, and Spark batch scoring with
the README's own snippet. Each test starts what it needs and stops it afterwards."""

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from click.testing import CliRunner
from ct2_fixture import write_tiny_ct2
from test_approaches_text import run_entrypoint

from heardet.mlops import stack as team

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]
BIN = str(Path(sys.executable).parent)


@pytest.fixture(scope="module")
def running_stack():
    """`heardet stack start` in a fresh folder the postgres user can reach; stopped after the module."""
    from heardet.cli import main

    root = Path(tempfile.mkdtemp(prefix="heardet-stack-"))
    root.chmod(0o755)
    try:
        result = CliRunner().invoke(main, ["stack", "start", "--root", str(root), "--port", "0"])
        assert result.exit_code == 0, result.output
        yield team.status(root), result.output
    finally:
        team.stop(root)
        shutil.rmtree(root, ignore_errors=True)


def client_env(stack: team.Stack, tmp_path: Path) -> dict:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_EXPERIMENT", "MLFLOW_RUN"))}
    return {**inherited, **stack.env(), "MLFLOW_REGISTRY_URI": stack.tracking_uri, "TQDM_DISABLE": "1",
            "HEARDET_CACHE": str(tmp_path / "cache"), "PATH": BIN + os.pathsep + os.environ["PATH"]}


def test_the_stack_prints_what_to_export_and_keeps_runs_in_postgresql_and_artifacts_on_disk(running_stack,
                                                                                          tmp_path, monkeypatch):
    stack, printed = running_stack
    assert f"export MLFLOW_TRACKING_URI={stack.tracking_uri}" in printed and "PGPASSFILE" in printed
    assert "postgresql://heardet@127.0.0.1:" in printed and ":" not in printed.split("postgresql://")[1].split("@")[0], \
        "the printed storage URL holds no password"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", stack.tracking_uri)
    mlflow.set_tracking_uri(stack.tracking_uri)
    with mlflow.start_run() as run:
        mlflow.log_text("hello", "notes/hello.txt")
    assert list(Path(stack.root, "artifacts").rglob("notes/hello.txt")), "artifacts proxied to the stack's folder"
    import psycopg

    with psycopg.connect(stack.database_url("mlflow"), passfile=str(stack.pgpass)) as db:
        assert db.execute("SELECT count(*) FROM runs WHERE run_uuid = %s", (run.info.run_id,)).fetchone()[0] == 1


@pytest.mark.timeout(1200)
def test_the_main_job_runs_against_the_tracking_server_and_its_ensemble_is_served(running_stack, tmp_path,
                                                                                   tiny_hf_whisper):
    stack, _ = running_stack
    tiny_ct2 = write_tiny_ct2(tmp_path / "tiny", source_positions=1500, target_positions=448)
    result = subprocess.run(
        [os.path.join(BIN, "mlflow"), "run", str(ROOT), "-e", "main", "--env-manager", "local",
         "--experiment-name", "team", "-P", "profile=smoke", "-P", f"data={tmp_path / 'data'}",
         "-P", f"out={tmp_path / 'out'}", "-P", f"asr_model={tiny_ct2.ct2_dir}",
         "-P", f"finetune_model={tiny_hf_whisper}"],
        env=client_env(stack, tmp_path), capture_output=True, text=True, timeout=1100, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert f"open {stack.tracking_uri}" in result.stdout
    mlflow.set_tracking_uri(stack.tracking_uri)
    mlflow.set_registry_uri(stack.tracking_uri)
    runs = mlflow.search_runs(experiment_names=["team"])
    assert set(runs["tags.approach"].dropna()) >= {"pipeline", "synth", "rule", "catboost", "finetune", "tune",
                                                   "ensemble", "promote"}
    assert not list(tmp_path.rglob("mlruns")), "nothing written to a local store"
    version = mlflow.MlflowClient().get_model_version_by_alias("heardet-ensemble", "production")
    assert list(Path(stack.root, "artifacts").rglob("MLmodel")), "models stored through the server"
    parent = runs[runs["tags.approach"] == "pipeline"].iloc[0]
    answer = mlflow.artifacts.load_text(f"runs:/{parent.run_id}/summary/serve_answer.json")
    assert '"label"' in answer, f"`mlflow models serve -m models:/heardet-ensemble@production` answered {answer}"
    assert version.version == "1"


@pytest.mark.timeout(900)
def test_two_tune_workers_share_one_postgresql_study(running_stack, tmp_path, tiny_hf_whisper, phrase_dataset):
    import optuna

    stack, _ = running_stack
    env = client_env(stack, tmp_path)
    # Made once up front: two `mlflow run --experiment-name` starting together can both try to create it, and
    # the second then fails on the unique name (mlflow's get-or-create is not atomic).
    if mlflow.MlflowClient(stack.tracking_uri).get_experiment_by_name("parallel") is None:
        mlflow.MlflowClient(stack.tracking_uri).create_experiment("parallel")
    workers = [subprocess.Popen(
        [os.path.join(BIN, "mlflow"), "run", str(ROOT), "-e", "tune", "--env-manager", "local",
         "--experiment-name", "parallel", "-P", f"data={phrase_dataset}", "-P", f"model={tiny_hf_whisper}",
         "-P", "n_folds=2", "-P", "max_seconds=2", "-P", "n_trials=3", "-P", "study_name=parallel",
         "-P", f"storage={stack.optuna_storage}", "-P", f"sampler_seed={seed}"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for seed in (1, 2)]
    outputs = [w.communicate(timeout=800)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], "\n".join(o[-3000:] for o in outputs)

    os.environ.setdefault("PGPASSFILE", str(stack.pgpass))
    study = optuna.load_study(study_name="parallel", storage=stack.optuna_storage)
    numbers = [t.number for t in study.trials]
    assert sorted(numbers) == list(range(6)), f"6 trials, numbers unique: {numbers}"
    mlflow.set_tracking_uri(stack.tracking_uri)
    parents = mlflow.search_runs(experiment_names=["parallel"], filter_string="tags.approach = 'tune'")
    assert len(parents) == 2
    trial_runs = {t.user_attrs["mlflow_run_id"]: t for t in study.trials}
    for run_id in trial_runs:
        assert mlflow.get_run(run_id).data.tags["mlflow.parentRunId"] in set(parents.run_id), run_id
    per_worker = {p: sum(mlflow.get_run(r).data.tags["mlflow.parentRunId"] == p for r in trial_runs)
                  for p in parents.run_id}
    assert sorted(per_worker.values()) == [3, 3], per_worker
    print(f"parallel tune: trials per worker {sorted(per_worker.values())}, study trials {len(study.trials)}")
    last = parents.sort_values("end_time").iloc[-1]
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert float(last["metrics.best_value"]) == pytest.approx(max(t.value for t in complete)), \
        "the last worker's best_* is the best of both workers' trials"


def readme_spark_snippet() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- tested by tests/test_team_stack.py -->\n```python\n(.*?)```", text, re.S)
    assert match, "the README's Spark snippet is marked for this test"
    return match.group(1)


@pytest.mark.timeout(900)
def test_the_readme_spark_snippet_scores_paths_and_bytes_like_heardet_predict(tiny_hf_whisper, phrase_dataset,
                                                                               mlflow_store, tmp_path, monkeypatch):
    from heardet.cli import main

    monkeypatch.setenv("PATH", BIN + os.pathsep + os.environ["PATH"])  # Spark's Python workers: this interpreter
    monkeypatch.setenv("PYSPARK_PYTHON", sys.executable)
    run_entrypoint("finetune", ["--data", str(phrase_dataset), "--model", str(tiny_hf_whisper), "--n-folds", "2",
                                "--max-seconds", "2", "--out", str(tmp_path / "out"), "--register-as", "spark-test"])
    files = sorted(phrase_dataset.glob("wav_*/*.wav"))
    (tmp_path / "broken.wav").write_bytes(b"not audio")
    files.append(tmp_path / "broken.wav")
    result = CliRunner().invoke(main, ["predict", *map(str, files), "--model", "models:/spark-test/1",
                                       "--no-progress", "-o", str(tmp_path / "p.csv")])
    assert result.exit_code == 1, result.output
    expected = pd.read_csv(tmp_path / "p.csv", keep_default_na=False)

    scope = {"model_uri": "models:/spark-test/1", "files": files}
    try:
        exec(readme_spark_snippet(), scope)  # noqa: S102 - the README's code, as a reader would run it
    finally:
        if "spark" in scope:
            scope["spark"].stop()
    for name in ("by_path", "by_bytes"):
        got = scope[name]
        assert got.label.tolist() == expected.label.tolist(), f"{name}: {got.to_dict('records')[:2]}"
        assert got.score.round(5).tolist() == expected.score.round(5).tolist(), name
        assert "not audio" in got.error.iloc[-1], got.error.iloc[-1]
