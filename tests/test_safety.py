"""What a new user's review found unsafe or untrue, one test per finding: a served model that opens
what a request names, requests without size limits, run parameters that say the wrong thing, a
password in a run's parameters, a cache that fails requests on a read-only disk, a promotion
gate that a registry hiccup skips, and unreadable test clips that vanish into label 0."""

import logging
import os
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from test_approaches_text import run_entrypoint

ROOT = Path(__file__).resolve().parents[1]
SERVED = {"__pyfunc_model_path__": "/srv/model"}


def test_a_served_model_opens_no_path_and_fetches_no_uri_a_request_names(write_audio, tmp_path):
    from heardet.mlops.contract import sources_from_frame
    from heardet.mlops.policy import InputPolicy

    clip = write_audio("c.wav")
    policy = InputPolicy.from_env(SERVED)
    sources, errors = sources_from_frame(pd.DataFrame({"path": [str(clip), "s3://bucket/key.wav", "runs:/abc/x.wav",
                                                                "/no/such/file.wav"]}), policy)
    assert sources == [None] * 4, "nothing is opened"
    assert "does not open file paths" in errors[0] and errors[0] == errors[3], "no hint whether a file exists"
    assert "does not fetch URIs" in errors[1] and "does not fetch URIs" in errors[2]


def test_an_audio_cell_is_never_read_as_a_path(write_audio):
    from heardet.mlops.contract import sources_from_frame
    from heardet.mlops.policy import InputPolicy

    clip = write_audio("c.wav")
    sources, errors = sources_from_frame(pd.DataFrame({"audio": [str(clip)]}), InputPolicy())
    assert sources == [None] and "base64" in errors[0], errors


def test_allowed_roots_admit_their_files_and_nothing_outside_them(write_audio, tmp_path):
    from heardet.mlops.contract import sources_from_frame
    from heardet.mlops.policy import InputPolicy

    inside = write_audio("in.wav", directory=tmp_path / "allowed")
    outside = write_audio("out.wav", directory=tmp_path / "other")
    (tmp_path / "allowed" / "link.wav").symlink_to(outside)
    policy = InputPolicy.from_env({**SERVED, "HEARDET_ALLOWED_ROOTS": str(tmp_path / "allowed")})
    paths = [str(inside), str(outside), str(tmp_path / "allowed" / ".." / "other" / "out.wav"),
             str(tmp_path / "allowed" / "link.wav")]
    sources, errors = sources_from_frame(pd.DataFrame({"path": paths}), policy)
    assert sources[0] == str(inside) and errors[0] == ""
    assert sources[1:] == [None] * 3 and all("outside the directories" in e for e in errors[1:]), errors


def test_the_library_and_cli_keep_reading_paths(write_audio):
    from heardet.mlops.contract import sources_from_frame
    from heardet.mlops.policy import InputPolicy

    clip = write_audio("c.wav")
    sources, errors = sources_from_frame(pd.DataFrame({"path": [str(clip)]}), InputPolicy.from_env({}))
    assert sources == [str(clip)] and errors == [""]


def test_requests_over_a_limit_are_refused_naming_the_limit(write_audio):
    from heardet.mlops.contract import InputError, sources_from_frame
    from heardet.mlops.policy import InputPolicy

    clip = write_audio("c.wav", seconds=2.0)
    policy = InputPolicy.from_env({**SERVED, "HEARDET_MAX_ROWS": "3", "HEARDET_MAX_ROW_BYTES": "100000",
                                   "HEARDET_MAX_ROW_SECONDS": "1.5"})
    with pytest.raises(InputError, match="at most 3 .*HEARDET_MAX_ROWS"):
        sources_from_frame(pd.DataFrame({"audio": [b"x"] * 4}), policy)
    with pytest.raises(InputError, match="row 1: 200001 bytes .*HEARDET_MAX_ROW_BYTES"):
        sources_from_frame(pd.DataFrame({"audio": [b"x", b"\0" * 200_001]}), policy)
    with pytest.raises(InputError, match=r"row 0: 2\.0 s of audio; .* 1\.5 s .*HEARDET_MAX_ROW_SECONDS"):
        sources_from_frame(pd.DataFrame({"audio": [clip.read_bytes()]}), policy)
    served = InputPolicy.from_env(SERVED)
    assert (served.max_rows, served.max_row_bytes, served.max_row_seconds) == (256, 32 * 1024 * 1024, 600.0)
    with pytest.raises(ValueError, match="HEARDET_MAX_ROWS='lots'"):
        InputPolicy.from_env({**SERVED, "HEARDET_MAX_ROWS": "lots"})


@pytest.fixture
def on_path(monkeypatch):
    """`mlflow run --env-manager local` runs `python …` from PATH: this interpreter's."""
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"])


@pytest.mark.timeout(600)
def test_mlflow_run_records_the_parameters_a_tuned_finetune_trained_with(tiny_hf_whisper, phrase_dataset,
                                                                         mlflow_store, on_path, tmp_path):
    with mlflow.start_run() as tune_run:
        mlflow.set_tag("approach", "tune")
        mlflow.log_params({"best_encoder_lr": 2e-5, "best_head_lr": 0.005, "best_dropout": 0.1})
    submitted = mlflow.projects.run(
        str(ROOT), "finetune", env_manager="local", synchronous=True,
        parameters={"data": str(phrase_dataset), "model": str(tiny_hf_whisper), "n_folds": 2, "max_seconds": 2,
                    "out": str(tmp_path / "out"), "params_from": tune_run.info.run_id, "head_lr": 0.002})
    params = mlflow.get_run(submitted.run_id).data.params
    assert float(params["encoder_lr"]) == 2e-5 and float(params["dropout"]) == 0.1, "the tuned values"
    assert float(params["head_lr"]) == 0.002, "a value given with -P wins over the tuned one"
    name = f"heardet-finetune-{tiny_hf_whisper.name.lower()}"
    assert params["register_as"] == name
    assert mlflow.MlflowClient().get_latest_versions(name)[0].run_id == submitted.run_id


def test_a_parameter_logged_with_another_value_is_an_error_not_a_silent_skip(mlflow_store):
    from heardet.mlops.tracking import log_params

    with mlflow.start_run() as run:
        mlflow.log_params({"n_folds": "5", "phrase": "'не слышу'", "out": "outputs", "augment": "false"})
        log_params({"n_folds": 5.0, "phrase": "не слышу", "out": str(Path("outputs").resolve()), "augment": False,
                    "new": 1})
        with pytest.raises(ValueError, match="n_folds: logged '5', used 3"):
            log_params({"n_folds": 3})
    assert mlflow.get_run(run.info.run_id).data.params["new"] == "1"


@pytest.mark.timeout(300)
def test_a_storage_url_with_a_password_is_refused_naming_the_run_mlflow_logged_it_in(phrase_dataset, mlflow_store,
                                                                                       on_path, capfd):
    from heardet.approaches.finetune.tune import TuneConfig

    with pytest.raises(ValueError, match="PGPASSWORD") as refused:
        TuneConfig(storage="postgresql://user:s3cret@127.0.0.1:1/optuna")
    assert "s3cret" not in str(refused.value)
    with pytest.raises(mlflow.exceptions.ExecutionException):
        mlflow.projects.run(str(ROOT), "tune", env_manager="local", synchronous=True,
                            parameters={"data": str(phrase_dataset), "model": "whisper-base",
                                        "storage": "postgresql://user:s3cret@127.0.0.1:1/optuna"})
    run = mlflow.search_runs(search_all_experiments=True).iloc[0]
    err = capfd.readouterr().err
    assert "PGPASSWORD" in err and f"mlflow runs delete --run-id {run.run_id}" in err, err[-2000:]
    assert run.status == "FAILED" and "tags.approach" not in run or pd.isna(run["tags.approach"]), \
        "refused before the run started its work"


def test_an_unwritable_transcript_cache_degrades_to_no_cache_with_one_warning(fake_asr, write_audio, tmp_path,
                                                                              caplog):
    from heardet.whisper.asr import make_transcriber
    from heardet.whisper.cache import TranscriptCache

    (tmp_path / "readonly").write_text("a file where the cache directory should be")
    cache = TranscriptCache(tmp_path / "readonly" / "transcripts")  # mkdir fails, as on a read-only file system
    clips = [write_audio(f"c{i}.wav", seconds=1 + i / 10) for i in range(3)]
    with caplog.at_level(logging.WARNING, logger="heardet"):
        results = make_transcriber().transcribe(clips, cache=cache, progress=False)
        again = make_transcriber().transcribe(clips, cache=cache, progress=False)
    assert all(r.error == "" and r.transcript is not None for r in results + again)
    warnings = [r for r in caplog.records if "cannot be written" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
    assert cache.unwritten == 6


def test_a_registry_error_during_promotion_refuses_instead_of_skipping_the_gate(fake_asr, phrase_dataset,
                                                                                 mlflow_store, tmp_path, monkeypatch):
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE

    from heardet.mlops.registry import current_production, promote

    for _ in range(2):
        run_entrypoint("transcribe", ["--data", str(phrase_dataset), "--out", str(tmp_path / "out")])
    promote("heardet-rule", 1)

    failed = []

    def hiccup(original):  # the first registry read after the candidate's (the Production lookup) fails once
        def read(self, *args, **kwargs):
            if not failed:
                failed.append(original.__name__)
                raise MlflowException("connection reset by peer", error_code=TEMPORARILY_UNAVAILABLE)
            return original(self, *args, **kwargs)
        return read

    for lookup in ("get_registered_model", "get_model_version_by_alias", "search_model_versions"):
        monkeypatch.setattr(mlflow.MlflowClient, lookup, hiccup(getattr(mlflow.MlflowClient, lookup)))
    with pytest.raises(MlflowException, match="connection reset"):
        promote("heardet-rule", 2, data=phrase_dataset)
    monkeypatch.undo()
    assert current_production("heardet-rule") == "1", "Production did not move"


def test_unreadable_test_clips_are_counted_listed_and_warned_about(fake_asr, phrase_dataset, mlflow_store,
                                                                   tmp_path, caplog):
    (phrase_dataset / "wav_test" / "te_3.wav").write_bytes(b"not audio at all")
    with caplog.at_level(logging.WARNING, logger="heardet"):
        run = run_entrypoint("transcribe", ["--data", str(phrase_dataset), "--out", str(tmp_path / "out")])
    assert run.data.metrics["test_unreadable"] == 1
    listed = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/submission/unreadable.csv")
    assert listed.splitlines()[1].startswith("te_3,") and "not audio" in listed
    assert any("could not be read" in r.getMessage() and "te_3" in r.getMessage() for r in caplog.records)
