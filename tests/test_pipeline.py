"""The main job end to end (`mlflow run . -e main`), with tiny random Whisper models and the
`smoke` profile: every stage is a real child run; the table and the served answer come back."""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from ct2_fixture import write_tiny_ct2

from entrypoints.pipeline import PROFILES, StageFailed, _run_stage, study_name

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(900)
def test_main_entry_point_runs_every_stage_and_serves_the_promoted_ensemble(tmp_path, tiny_hf_whisper):
    tiny_ct2 = write_tiny_ct2(tmp_path / "tiny", source_positions=1500, target_positions=448)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    bin_dir = str(Path(sys.executable).parent)
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_EXPERIMENT", "MLFLOW_RUN"))}
    env = {**inherited, "MLFLOW_TRACKING_URI": uri, "HEARDET_CACHE": str(tmp_path / "cache"),
           "PATH": bin_dir + os.pathsep + os.environ["PATH"], "TQDM_DISABLE": "1"}
    result = subprocess.run(
        [os.path.join(bin_dir, "mlflow"), "run", str(ROOT), "-e", "main", "--env-manager", "local",
         "-P", "profile=smoke", "-P", f"data={tmp_path / 'data'}", "-P", f"out={tmp_path / 'out'}",
         "-P", f"asr_model={tiny_ct2.ct2_dir}", "-P", f"finetune_model={tiny_hf_whisper}"],
        env=env, capture_output=True, text=True, timeout=880, cwd=tmp_path)  # MLflow's ./mlruns lands in tmp_path
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert "approach 4: ensemble" in result.stdout and "mlflow ui" in result.stdout, result.stdout[-2000:]

    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(search_all_experiments=True)
    parent = runs[runs["tags.approach"] == "pipeline"].iloc[0]
    children = runs[runs["tags.mlflow.parentRunId"] == parent.run_id]
    assert set(children["tags.approach"]) >= {"synth", "rule", "catboost", "finetune", "tune", "ensemble", "promote"}
    assert (children.status == "FINISHED").all()
    synth = children[children["tags.approach"] == "synth"].iloc[0]
    assert float(synth["params.rhvoice_fraction"]) == PROFILES["smoke"].rhvoice_fraction > 0  # three engines
    finetune = children[children["tags.approach"] == "finetune"].iloc[0]
    assert float(finetune["params.feature_dropout"]) == PROFILES["smoke"].feature_dropout > 0  # carried through
    tune = children[children["tags.approach"] == "tune"].iloc[0]
    assert tune["params.study_name"] == study_name(PROFILES["smoke"]) != study_name(PROFILES["quick"])
    assert tune["params.select"] == PROFILES["smoke"].tune_select == "one_se"  # the tune's selection rule
    assert tune["tags.selection"], "the tune says which trial it handed on, and why"
    assert float(finetune["params.style_mix"]) == float(tune["params.style_mix"]) == PROFILES["smoke"].style_mix > 0
    assert finetune["params.frame_head"] == tune["params.frame_head"] == PROFILES["smoke"].frame_head == "gru"
    assert finetune["params.center"] == tune["params.center"] == str(PROFILES["smoke"].center).lower() == "true"
    assert float(finetune["params.outside_weight"]) == float(tune["params.outside_weight"]) \
        == PROFILES["smoke"].outside_weight > 0
    assert float(finetune["params.hard_negative_weight"]) == float(tune["params.hard_negative_weight"]) \
        == PROFILES["smoke"].hard_negative_weight != 1
    assert int(finetune["params.heads"]) == PROFILES["smoke"].heads  # the profile's heads reach the fine-tune
    assert finetune["params.head_vote"] == PROFILES["smoke"].head_vote != "mean"  # and how they vote
    smoke = PROFILES["smoke"]  # stage (b) and its fits in the final fit only; the tune and folds are stage (a)
    assert int(tune["params.top_layers"]) == 0 < int(finetune["params.top_layers"]) == smoke.top_layers
    assert float(finetune["params.encoder_lr"]) == smoke.stage_b_lr > 0 == float(tune["params.encoder_lr_max"])
    assert (int(finetune["params.fits"]), finetune["params.fit_stage_a"], finetune["params.fold_stage_b"]) \
        == (smoke.fits, smoke.fit_stage_a, "false") == (2, "shared", "false")
    assert (finetune["params.fit_merge"], int(finetune["params.heads"])) == (smoke.fit_merge, smoke.heads) \
        == ("average", 2)  # the fits merged into one, then a second head on it
    assert finetune["params.cpu_bf16"] == str(smoke.cpu_bf16).lower() == "true"  # stage (b)'s steps in bf16 (with AMX)
    assert finetune["metrics.final_fit_top_seconds"] > 0 and "metrics.cv_fold_head_seconds" in finetune
    assert pd.isna(finetune.get("metrics.cv_fold_top_seconds")), "the folds trained stage (b)"
    assert int(finetune["params.average_epochs"]) == int(tune["params.average_epochs"]) \
        == PROFILES["smoke"].average_epochs > 0
    client = mlflow.MlflowClient()
    assert str(client.get_model_version_by_alias("heardet-ensemble", "production").version) == "1"
    artifacts = {a.path for a in client.list_artifacts(parent.run_id, "summary")}
    assert {"summary/table.txt", "summary/serve_answer.json"} <= artifacts
    for name in ("approach_1.csv", "approach_2.csv", "approach_4_blended.csv"):
        assert (tmp_path / "out" / name).exists(), name


@pytest.mark.timeout(300)
def test_a_refused_promotion_is_the_gates_answer_and_a_failed_stage_names_itself(phrase_dataset, mlflow_store,
                                                                                   monkeypatch):
    import pandas as pd

    from heardet.mlops.registry import current_production, promote

    monkeypatch.setenv("PATH", str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"])
    truth = dict(pd.read_csv(phrase_dataset / "test_labels.csv").itertuples(index=False))

    class Answers(mlflow.pyfunc.PythonModel):  # defined here, so pickled by value: the stage's process loads it
        def __init__(self, answers):
            self.answers = answers

        def predict(self, context, model_input, params=None):
            labels = [int(self.answers.get(Path(p).stem, 0)) for p in model_input["path"]]
            return pd.DataFrame({"label": labels, "score": [float(v) for v in labels], "error": [""] * len(labels)})

    for answers in (truth, {}):  # version 1 right on every clip, version 2 never calls the phrase
        with mlflow.start_run():
            mlflow.pyfunc.log_model(name="model", python_model=Answers(answers), registered_model_name="gate")
    promote("gate", 1, phrase_dataset, progress=False)

    refused = _run_stage("promote", "promote", {"name": "gate", "version": 2, "data": str(phrase_dataset)}, None, None)
    assert "worse than Production" in refused.notes["refused"] and refused.run_id
    assert current_production("gate") == "1"
    with pytest.raises(StageFailed, match=r"stage 'promote' \(mlflow run \. -e promote\) failed in run \w+"):
        _run_stage("promote", "promote", {"name": "gate", "version": 7, "data": ""}, None, None)


def test_a_profile_whose_data_or_recipe_changed_tunes_in_a_study_of_its_own():
    full = PROFILES["full"]
    assert study_name(full) == study_name(dataclasses.replace(full)), "the same profile resumes its study"
    others = {study_name(dataclasses.replace(full, **change))
              for change in ({"n_train": full.n_train + 1}, {"finetune_epochs": full.finetune_epochs + 1},
                             {"rhvoice_fraction": 0.0}, {"feature_dropout": 0.1})}
    assert len(others) == 4 and study_name(full) not in others
