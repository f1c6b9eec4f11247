"""The bad-input suite (``bad_inputs.py``) against `heardet predict`, the pyfunc and a real served
model: every input gets a row error that names the problem, or a 4xx with a message; the good rows
of the same request are scored; never a 500, never a stack trace, never a dead server.

The model is an ensemble of two rule models over a tiny random CTranslate2 Whisper (the real
transcription path; its transcripts are noise, so only the contract is checked).
"""

import base64
import json
import math
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from bad_inputs import SCORED, Case, cell_cases, encode, file_cases, speech_like
from click.testing import CliRunner
from ct2_fixture import write_tiny_ct2

from heardet.mlops.serving import served

MAX_ROW_BYTES = 12_000_000  # the served model's limit here: room for the 10-minute silence (9.6 MB)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A tracking store holding ``models:/bad-inputs/1``, and the directories the cases live in."""
    from heardet.approaches.ensemble import EnsembleModel
    from heardet.approaches.rule import RuleModel
    from heardet.mlops.contract import log_contract_model

    root = tmp_path_factory.mktemp("bad-inputs")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as env:
        use_store(env, uri)
        env.setenv("HEARDET_CACHE", str(root / "cache"))
        experiment = mlflow.create_experiment("bad-inputs", artifact_location=(root / "mlruns").as_uri())
        tiny = write_tiny_ct2(root / "tiny", source_positions=1500, target_positions=64)
        options = {"language": "ru", "beam_size": 1, "temperature_fallback": False, "word_timestamps": False}
        members = []
        for i, rule in enumerate(["a", "b"]):
            with mlflow.start_run(experiment_id=experiment):
                log_contract_model(RuleModel(str(tiny.ct2_dir), "faster-whisper", options, rule, "ab"), "model",
                                   registered_model_name=f"bad-inputs-member-{i}")
            members.append(f"models:/bad-inputs-member-{i}/1")
        ensemble = EnsembleModel(members)
        with mlflow.start_run(experiment_id=experiment):
            log_contract_model(ensemble, "model", artifacts=dict(zip(ensemble.keys, members)),
                               registered_model_name="bad-inputs", extra_int_columns=ensemble.keys)
        for case in file_cases():
            (root / "allowed").mkdir(exist_ok=True)
            (root / "allowed" / f"{slug(case.name)}.wav").write_bytes(case.data)
        encode_to(root / "allowed" / "good.wav")
        encode_to(root / "elsewhere" / "good.wav")
        yield {"root": root, "uri": uri, "model": "models:/bad-inputs/1"}


def use_store(env: pytest.MonkeyPatch, uri: str) -> None:
    """Point tracking and registry at ``uri`` (earlier tests leave MLflow's globals elsewhere)."""
    env.setenv("MLFLOW_TRACKING_URI", uri)
    env.setenv("MLFLOW_REGISTRY_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)


def slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name.lower())


def encode_to(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode(speech_like()))
    return path


def judge(case: Case, label: int, error: str) -> str | None:
    """Why a row's answer breaks the case's expectation, or None."""
    if label in (0, 1) and not error:
        return None if SCORED in case.expect else f"scored (label {label}), expected an error with {case.expect}"
    if label != -1:
        return f"label {label} with error {error!r}"
    if not any(word in error for word in case.expect if word != SCORED):
        return f"error {error!r} does not name {case.expect}"
    if "Traceback" in error or "/heardet/" in error:
        return f"error leaks internals: {error!r}"
    return None


def check_rows(cases: list[Case], frame: pd.DataFrame, surface: str) -> None:
    assert len(frame) == len(cases), f"{surface}: {len(frame)} rows back for {len(cases)}"
    problems = [f"{case.name}: {why}" for case, row in zip(cases, frame.itertuples())
                if (why := judge(case, int(row.label), str(row.error or "")))]
    print(f"bad-input suite, {surface}: {len(cases)} cases, {len(cases) - len(problems)} as expected")
    assert not problems, f"{surface}:\n" + "\n".join(problems)


def path_cases(root: Path, served: bool) -> list[tuple[Case, str]]:
    """``path`` cells: allowed for the served model only under ``root/allowed``; any for the library."""
    refused = ("does not open", "outside the directories")
    return [
        (Case("a path under the allowed root", (SCORED,)), str(root / "allowed" / "good.wav")),
        (Case("a path outside it", refused if served else (SCORED,)), str(root / "elsewhere" / "good.wav")),
        (Case("a missing path outside it", refused if served else ("no such file",)), "/no/such/dir/x.wav"),
        (Case("a climb out of the allowed root", refused if served else (SCORED,)),
         str(root / "allowed" / ".." / "elsewhere" / "good.wav")),
    ] + ([(Case("an s3 URI", ("does not fetch URIs",)), "s3://bucket/clip.wav"),
          (Case("a runs:/ URI", ("does not fetch URIs",)), "runs:/0123/model/MLmodel")] if served else [])


def request_frame(cases: list[Case], paths: list[tuple[Case, str]], as_text: bool) -> tuple[list[Case], dict]:
    """All row cases as one request: file bytes (base64 text when ``as_text``), raw cells, path cells,
    plus an extra column that must be ignored."""
    rows = [(c, base64.b64encode(c.data).decode() if as_text else c.data, None) for c in cases if c.data is not None]
    rows += [(c, c.cell, None) for c in cases if c.data is None]
    rows += [(c, None, p) for c, p in paths]
    columns = {"audio": [a for _, a, _ in rows], "path": [p for _, _, p in rows], "note": ["ignored"] * len(rows)}
    return [c for c, _, _ in rows], columns


def test_the_table_has_at_least_forty_inputs():
    n = len(file_cases()) + len(cell_cases()) + len(path_cases(Path("/r"), served=True))
    print(f"bad-input suite: {n} row cases ({len(file_cases())} files, {len(cell_cases())} cells, "
          f"{len(path_cases(Path('/r'), served=True))} paths), plus the request-level cases")
    assert n >= 40


@pytest.mark.timeout(600)
def test_heardet_predict_scores_the_good_files_and_names_the_problem_of_each_bad_one(store, tmp_path, monkeypatch):
    from heardet.cli import main

    use_store(monkeypatch, store["uri"])
    cases = file_cases()
    files = []
    for i, case in enumerate(cases):
        files.append(tmp_path / f"{i:02d}_{slug(case.name)}.wav")  # every one named .wav, whatever it holds
        files[-1].write_bytes(case.data)
    result = CliRunner().invoke(main, ["predict", *map(str, files), "--model", store["model"], "--no-progress",
                                       "-o", str(tmp_path / "p.csv")], catch_exceptions=False)
    assert result.exit_code == 1, f"some files are unreadable: exit 1, got {result.exit_code}\n{result.output}"
    frame = pd.read_csv(tmp_path / "p.csv", keep_default_na=False)
    check_rows(cases, frame, "heardet predict")


@pytest.mark.timeout(600)
def test_the_pyfunc_answers_every_row_and_refuses_only_malformed_requests(store, monkeypatch):
    from heardet.mlops.contract import InputError

    use_store(monkeypatch, store["uri"])
    model = mlflow.pyfunc.load_model(store["model"])
    cases, columns = request_frame(file_cases() + cell_cases(), path_cases(store["root"], served=False), as_text=False)
    frame = model.predict(pd.DataFrame(columns))
    check_rows(cases, frame, "pyfunc")
    assert model.predict(pd.DataFrame({"audio": pd.Series([], dtype=object)})).empty
    with pytest.raises(InputError, match="input needs a column 'audio'"):
        model.predict(pd.DataFrame({"sound": [b"x"]}))


def post(port: int, body: bytes, content_type: str = "application/json") -> tuple[int, dict | str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                     headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            status, text = response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        status, text = err.code, err.read().decode()
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def split_body(columns: dict) -> bytes:
    names = list(columns)
    rows = [list(values) for values in zip(*columns.values())]
    return json.dumps({"dataframe_split": {"columns": names, "data": rows}}).encode()


@pytest.mark.timeout(900)
def test_the_served_model_answers_every_input_with_a_row_error_or_a_4xx_and_stays_up(store, tmp_path):
    env = {"MLFLOW_TRACKING_URI": store["uri"], "MLFLOW_REGISTRY_URI": store["uri"],
           "HEARDET_ALLOWED_ROOTS": str(store["root"] / "allowed"), "HEARDET_MAX_ROW_BYTES": str(MAX_ROW_BYTES), "HEARDET_CACHE": str(store["root"] / "serve-cache")}
    with served(store["model"], timeout_s=240, env=env, log_path=tmp_path / "serve.log") as port:
        cases, columns = request_frame(file_cases() + cell_cases(), path_cases(store["root"], served=True),
                                       as_text=True)
        columns["audio"] = [None if isinstance(v, float) and math.isnan(v) else v for v in columns["audio"]]
        status, answer = post(port, split_body(columns))
        assert status == 200, answer
        check_rows(cases, pd.DataFrame(answer["predictions"]), "served")

        good = base64.b64encode(encode(speech_like())).decode()
        eleven_minutes = base64.b64encode(encode(speech_like(660, 8000), 8000, subtype="PCM_16")).decode()
        refused = {
            "not JSON": (b"{not json", "application/json", None),
            "a JSON list": (b"[1, 2, 3]", "application/json", None),
            "no audio or path column": (json.dumps({"dataframe_split": {"columns": ["sound"], "data": [["x"]]}}).encode(),
                                        "application/json", "'audio'"),
            "text/plain": (b"hello", "text/plain", None),
            "more rows than allowed": (split_body({"audio": [good] * 257}), "application/json", "HEARDET_MAX_ROWS"),
            "a row over the byte limit": (split_body({"audio": [good, "A" * (MAX_ROW_BYTES * 4 // 3 + 400)]}),
                                          "application/json", "HEARDET_MAX_ROW_BYTES"),
            "a row over the seconds limit": (split_body({"audio": [eleven_minutes]}), "application/json",
                                             "HEARDET_MAX_ROW_SECONDS"),
        }
        problems = []
        for name, (body, content_type, named) in refused.items():
            status, answer = post(port, body, content_type)
            text = json.dumps(answer) if isinstance(answer, dict) else str(answer)
            if not 400 <= status < 500:
                problems.append(f"{name}: HTTP {status}, expected 4xx ({text[:300]})")
            if "stack_trace" in text or "Traceback" in text:
                problems.append(f"{name}: a stack trace in the response")
            if named and named not in text:
                problems.append(f"{name}: the message does not name {named}: {text[:300]}")
        print(f"bad-input suite, served: {len(refused)} malformed or oversized requests")
        assert not problems, "\n".join(problems)
        status, answer = post(port, json.dumps({"dataframe_split": {"columns": ["audio"], "data": []}}).encode())
        assert status in (200, 400) and "stack_trace" not in json.dumps(answer), (status, answer)
        status, answer = post(port, split_body({"audio": [good]}))
        assert status == 200 and answer["predictions"][0]["label"] in (0, 1), "still serving"
    log = (tmp_path / "serve.log").read_text(errors="replace")
    assert "Traceback" not in log or "internal error" not in log, log[-3000:]
