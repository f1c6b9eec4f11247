"""The `heardet` command as a new user meets it: where models are found, what each exit code
means, messages said once, and the request body for a served model. Real MLflow store in
tmp_path, real registered rule models; only Whisper is the fake that 'hears' 300 Hz tones."""

import base64
import json
import logging

import pytest
from click.testing import CliRunner
from test_approaches_text import run_entrypoint

from heardet.cli import main
from heardet.mlops.store import find_store


@pytest.fixture
def registered_rule(fake_asr, phrase_dataset, mlflow_store, tmp_path):
    """heardet-rule version 1 in the tmp_path/mlflow.db store; returns the store's path."""
    run_entrypoint("transcribe", ["--data", str(phrase_dataset), "--out", str(tmp_path / "out")])
    return tmp_path / "mlflow.db"


@pytest.fixture
def no_store_settings(monkeypatch):
    """Neither MLFLOW_TRACKING_URI nor MLFLOW_REGISTRY_URI: the command must find the store itself."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)


def heardet(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_predict_finds_the_projects_store_from_a_subfolder(registered_rule, no_store_settings, phrase_dataset,
                                                           tmp_path, monkeypatch):
    subfolder = tmp_path / "calls" / "today"
    subfolder.mkdir(parents=True)
    monkeypatch.chdir(subfolder)
    result = heardet("predict", phrase_dataset / "wav_test", "--model", "models:/heardet-rule/1",
                     "-o", "p.csv", "--no-progress")
    assert result.exit_code == 0, result.output
    assert (subfolder / "p.csv").exists() and not (subfolder / "mlflow.db").exists()


def test_predict_outside_any_project_says_no_store_was_found_and_creates_none(
        registered_rule, no_store_settings, phrase_dataset, tmp_path_factory, monkeypatch):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    if find_store(elsewhere) is not None:
        pytest.skip(f"{find_store(elsewhere)} lies above the test's folder")
    monkeypatch.chdir(elsewhere)
    result = heardet("predict", phrase_dataset / "wav_test", "--model", "models:/heardet-rule/1", "--no-progress")
    assert result.exit_code == 2, result.output
    assert "no MLflow tracking store found" in result.output and "--tracking-uri" in result.output
    assert list(elsewhere.iterdir()) == [], "a failed lookup must leave nothing behind"

    result = heardet("--tracking-uri", registered_rule, "predict", phrase_dataset / "wav_test",
                     "--model", "models:/heardet-rule/1", "-o", elsewhere / "p.csv", "--no-progress")
    assert result.exit_code == 0, result.output


def test_a_missing_store_file_is_refused_not_created(no_store_settings, phrase_dataset, tmp_path):
    result = heardet("--tracking-uri", f"sqlite:///{tmp_path / 'nope' / 'mlflow.db'}", "predict",
                     phrase_dataset / "wav_test", "--model", "models:/heardet-rule/1")
    assert result.exit_code == 2 and "no such file" in result.output, result.output
    assert not (tmp_path / "nope").exists()


def test_an_unknown_model_name_lists_the_registered_models(registered_rule, phrase_dataset):
    result = heardet("predict", phrase_dataset / "wav_test", "--model", "models:/heardet-ensemble@production")
    assert result.exit_code == 2, result.output
    assert "'heardet-ensemble' not found" in result.output and "it holds heardet-rule" in result.output
    assert "--tracking-uri" in result.output and "MLFLOW_TRACKING_URI" in result.output


@pytest.mark.parametrize("command", ["predict", "transcribe", "evaluate"])
def test_a_missing_path_exits_2_before_any_model_is_loaded(command, registered_rule, fake_asr, tmp_path):
    made = len(fake_asr)  # every model load makes a transcriber
    model = [] if command == "transcribe" else ["--model", "models:/heardet-rule/1"]
    result = heardet(command, tmp_path / "no-such-folder", *model)
    assert result.exit_code == 2, result.output
    assert "no-such-folder" in result.output
    assert len(fake_asr) == made, "no model may be loaded for a path that does not exist"


@pytest.mark.parametrize("command", ["predict", "transcribe"])
def test_an_empty_folder_exits_2_and_says_so_once(command, fake_asr, tmp_path, caplog):
    (tmp_path / "empty").mkdir()
    model = [] if command == "transcribe" else ["--model", "models:/heardet-rule/1"]
    with caplog.at_level(logging.INFO):
        result = heardet(command, tmp_path / "empty", *model)
    assert result.exit_code == 2, result.output
    said = result.output + caplog.text
    assert said.count("no audio files") + said.count("holds no audio") == 1, said
    assert fake_asr == []


def test_transcribe_exits_0_when_all_are_read_and_1_when_some_are_not(fake_asr, phrase_dataset, tmp_path, caplog):
    result = heardet("transcribe", phrase_dataset / "wav_test", "-o", tmp_path / "t.csv", "--no-progress")
    assert result.exit_code == 0, result.output
    (tmp_path / "x.wav").write_text("hello, this is a text file with an audio name\n")
    with caplog.at_level(logging.DEBUG, logger="heardet"):
        result = heardet("transcribe", phrase_dataset / "wav_test", tmp_path / "x.wav", "-o", tmp_path / "t.csv",
                         "--no-progress")
    assert result.exit_code == 1, result.output
    assert "x.wav: not audio: starts with text 'hello, this is a text" in result.output
    assert "expected .wav" not in result.output, "the extension is fine; the content is not audio"
    warned = [r for r in caplog.records if r.levelno >= logging.WARNING and "x.wav" in r.getMessage()]
    assert result.output.count("not audio") == 1 and warned == [], "the reason is told once, at the end"


def test_evaluate_exits_1_when_a_clip_is_unreadable_and_still_scores_the_rest(registered_rule, phrase_dataset):
    result = heardet("evaluate", phrase_dataset, "--model", "models:/heardet-rule/1", "--no-progress")
    assert result.exit_code == 0, result.output
    (phrase_dataset / "wav_test" / "te_0.wav").write_bytes(b"RIFF\x00\x00")
    result = heardet("evaluate", phrase_dataset, "--model", "models:/heardet-rule/1", "--no-progress")
    assert result.exit_code == 1, result.output
    assert "macro_f1" in result.output and "te_0.wav: corrupt or truncated WAV audio" in result.output


def test_request_writes_a_body_whose_base64_decodes_to_each_file(write_audio, tmp_path):
    clips = [write_audio("a.wav", seconds=4.0), write_audio("b.flac", seconds=1.0)]
    result = CliRunner().invoke(main, ["request", *map(str, clips)])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["dataframe_split"]["columns"] == ["audio"]
    assert [base64.b64decode(row[0]) for row in body["dataframe_split"]["data"]] == [c.read_bytes() for c in clips]

    result = heardet("request", tmp_path, "-o", tmp_path / "body.json")
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "body.json").read_text())["dataframe_split"]["data"]
    assert sorted(base64.b64decode(r[0]) for r in rows) == sorted(c.read_bytes() for c in clips)


def test_request_for_a_missing_file_exits_2(tmp_path):
    result = heardet("request", tmp_path / "missing.wav")
    assert result.exit_code == 2 and "missing.wav" in result.output
