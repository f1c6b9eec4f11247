"""The served ensemble, end to end: a real `mlflow models serve` process on a free local port.

Members are rule models over a tiny random CTranslate2 Whisper (faster-whisper, the real
path); their transcripts are noise, so the test checks the contract, not accuracy.
"""

import base64
import json
import urllib.error
import urllib.request

import mlflow
import pytest
from ct2_fixture import write_tiny_ct2

from heardet.mlops.serving import served


def post(port, body: bytes | str, timeout=120):
    data = body.encode() if isinstance(body, str) else body
    request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=data,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.fixture
def served_ensemble(tmp_path, mlflow_store, monkeypatch):
    from heardet.approaches.ensemble import EnsembleModel
    from heardet.approaches.rule import RuleModel
    from heardet.mlops.contract import log_contract_model
    from heardet.mlops.registry import promote

    monkeypatch.setenv("HEARDET_CACHE", str(tmp_path / "cache"))
    tiny = write_tiny_ct2(tmp_path / "tiny", source_positions=1500, target_positions=448)
    options = {"language": "ru", "beam_size": 1, "temperature_fallback": False, "word_timestamps": False}
    uris = []
    for i, rule in enumerate(["a", "b", "c"]):
        with mlflow.start_run():
            log_contract_model(RuleModel(str(tiny.ct2_dir), "faster-whisper", options, rule, "abc"), "model",
                               registered_model_name=f"member-{i}")
        uris.append(f"models:/member-{i}/1")
    ensemble = EnsembleModel(uris)
    with mlflow.start_run():
        log_contract_model(ensemble, "model", artifacts=dict(zip(ensemble.keys, uris)),
                           registered_model_name="heardet-ensemble", extra_int_columns=ensemble.keys)
    promote("heardet-ensemble", 1)

    monkeypatch.delenv("TQDM_DISABLE", raising=False)  # the server's log would show MLflow's bars, were they on
    with served("models:/heardet-ensemble@production", timeout_s=180, env={"MLFLOW_TRACKING_URI": mlflow_store},
                log_path=tmp_path / "serve.log") as port:
        yield port


def test_the_served_ensemble_says_once_when_it_is_ready_without_download_bars(served_ensemble, tmp_path):
    log = (tmp_path / "serve.log").read_text(errors="replace")
    assert log.count("loading EnsembleModel of 3 members (vote): ready in") == 1, log[-3000:]
    assert log.count("loading RuleModel") == 3, "each member says when it is ready"
    assert "Downloading artifacts" not in log, log[-3000:]


def test_served_ensemble_answers_every_request_form_and_isolates_bad_rows(served_ensemble, write_audio):
    port = served_ensemble
    clips = [base64.b64encode(write_audio(f"c{i}.wav", seconds=1.0 + i * 0.3).read_bytes()).decode() for i in range(2)]
    corrupt = base64.b64encode(b"definitely not audio").decode()
    bodies = {
        "dataframe_split": {"dataframe_split": {"columns": ["audio"], "data": [[clips[0]], [corrupt], [clips[1]]]}},
        "dataframe_records": {"dataframe_records": [{"audio": clips[0]}, {"audio": corrupt}, {"audio": clips[1]}]},
        "inputs": {"inputs": {"audio": [clips[0], corrupt, clips[1]]}},
    }
    for form, body in bodies.items():
        status, answer = post(port, json.dumps(body))
        assert status == 200, (form, answer)
        rows = answer["predictions"]
        assert [r["label"] in (0, 1) for r in rows] == [True, False, True], (form, rows)
        assert rows[1]["label"] == -1 and "not audio" in rows[1]["error"], (form, rows[1])
        assert all(0.0 <= r["score"] <= 1.0 for r in rows), (form, rows)
        assert sum(k.startswith("vote_") for k in rows[0]) == 3, (form, rows[0])


def test_malformed_requests_get_a_clear_400_and_the_server_keeps_serving(served_ensemble, write_audio):
    port = served_ensemble
    for body in ('{"dataframe_split": {"columns": ["sound"], "data": [["x"]]}}', "not json", '{"nothing": 1}'):
        status, answer = post(port, body)
        assert status == 400, (body, answer)
        assert "stack_trace" not in answer and "Traceback" not in json.dumps(answer), answer
        assert "/heardet/" not in answer.get("message", ""), "no server paths in responses"
    status, answer = post(port, '{"dataframe_split": {"columns": ["sound"], "data": [["x"]]}}')
    assert "'audio'" in answer["message"] and "'path'" in answer["message"]
    clip = base64.b64encode(write_audio("ok.wav").read_bytes()).decode()
    status, answer = post(port, json.dumps({"inputs": {"audio": [clip]}}))
    assert status == 200 and answer["predictions"][0]["label"] in (0, 1)
