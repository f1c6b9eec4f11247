"""Whole-call scanning: channels, voice-activity gating, events, streaming, call metrics, the CLI."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from click.testing import CliRunner

from heardet.audio import SAMPLE_RATE
from heardet.mlops.contract import ContractModel, Prediction, sources_from_frame, to_frame
from heardet.scan import (
    FileScan,
    ScanConfig,
    call_metrics,
    det_points,
    merge_events,
    model_scorer,
    operating_point,
    scan_file,
)
from tests.test_encoder_clf import noise, with_burst

PLANT_AT_S = 37.0


class CountingScorer:
    """Wraps a scorer and counts the windows it was asked for, per call."""

    def __init__(self, inner=None):
        self.inner = inner
        self.windows: list[int] = []

    def __call__(self, windows):
        self.windows.append(len(windows))
        if self.inner is not None:
            return self.inner(windows)
        return pd.DataFrame({"label": [0] * len(windows), "score": [0.0] * len(windows), "error": [""] * len(windows)})


class BurstModel(ContractModel):
    """A tiny contract model (saved and loaded as a real pyfunc): the share of a window's energy near
    1 kHz is its score, and the 20 ms frames where that share is high are the phrase. A tiny random
    Whisper cannot learn to find anything, and the scan must be tested on a model that can."""

    def predict(self, context, model_input, params=None):
        from heardet.audio import load_audio

        sources, errors = sources_from_frame(model_input)
        predictions, starts, ends = [], [], []
        for source in sources:
            audio = load_audio(source, allow_silent=True)
            frames = audio[: len(audio) // 320 * 320].reshape(-1, 320)
            spectrum = np.abs(np.fft.rfft(frames, axis=1)) ** 2
            band = spectrum[:, 18:23].sum(axis=1) / (spectrum.sum(axis=1) + 1e-9)  # 900-1100 Hz
            score = float(np.clip(band.max() * 1.5, 0, 1))
            hot = np.flatnonzero(band > 0.5)
            predictions.append(Prediction(int(score >= 0.5), score))
            starts.append(hot[0] * 0.02 if len(hot) else np.nan)
            ends.append((hot[-1] + 1) * 0.02 if len(hot) else np.nan)
        return to_frame(predictions, {"phrase_start_s": starts, "phrase_end_s": ends})


@pytest.fixture(scope="module")
def burst_model(tmp_path_factory):
    import mlflow

    root = tmp_path_factory.mktemp("burst_model") / "pyfunc"
    mlflow.pyfunc.save_model(str(root), python_model=BurstModel())
    return mlflow.pyfunc.load_model(str(root))


def test_a_planted_burst_is_found_in_its_channel_at_its_time(burst_model, tmp_path):
    seconds = 60.0
    left, right = noise(seconds, 1, amp=0.02), noise(seconds, 2, amp=0.02)
    right = with_burst(right, PLANT_AT_S)
    path = tmp_path / "call.wav"
    sf.write(path, np.stack([left, right], axis=1), SAMPLE_RATE, subtype="FLOAT")
    result = scan_file(path, model_scorer(burst_model), ScanConfig(vad=False, block_s=20.0))
    assert not result.error and result.channels == ("left", "right")
    assert result.scored == result.windows > 0 and result.duration_s == pytest.approx(seconds)
    assert [e.channel for e in result.events] == ["right"], result.events
    event = result.events[0]
    assert abs(event.start_s - PLANT_AT_S) <= 0.5, event
    mixed = scan_file(path, model_scorer(burst_model), ScanConfig(vad=False, mix=True))
    assert mixed.channels == ("mono",) and {e.channel for e in mixed.events} <= {"mono"}


def test_a_silent_channel_costs_no_model_calls_and_speech_does(tmp_path):
    from heardet.synth.voices import check_tts, espeak

    try:
        check_tts(festival=False)
    except RuntimeError as exc:
        pytest.skip(str(exc))
    speech = espeak("алло, вы меня слышите? повторите пожалуйста", "ru+m3", 150, 50)
    quiet = np.zeros(int(20 * SAMPLE_RATE), np.float32)
    left = quiet.copy()
    for at in (5, 13):  # the second utterance straddles the first block's end (block_s=10)
        left[at * SAMPLE_RATE : at * SAMPLE_RATE + len(speech)] = 0.3 * speech / np.max(np.abs(speech))
    path = tmp_path / "one_sided.wav"
    import soxr

    stereo = np.stack([soxr.resample(left, SAMPLE_RATE, 8000), soxr.resample(quiet, SAMPLE_RATE, 8000)], axis=1)
    sf.write(path, stereo, 8000, subtype="PCM_16")
    counting = CountingScorer()
    result = scan_file(path, counting, ScanConfig(window_s=4.0, hop_s=2.0, block_s=10.0))
    scored_channels = {w[0] for w in result.window_scores}
    assert scored_channels == {"left"}, "the silent right channel was sent to the model"
    assert 0 < result.scored == sum(counting.windows) < result.windows
    assert 0 < result.speech_s < 2 * len(speech) / SAMPLE_RATE + 2 and result.scored_s <= 4 * 4.0
    said = len(speech) / SAMPLE_RATE
    for at in (5, 13):
        covering = [w for w in result.window_scores if w[1] <= at + 0.3 and w[2] >= at + said - 0.3]
        assert covering, f"no window holds the utterance at {at} s: {result.window_scores}"
    assert all(4.0 < w[1] and w[2] < 13 + said + 1 and (w[2] < 5 + said + 1 or w[1] > 12)
               for w in result.window_scores), "a window on silence"
    everything = scan_file(path, CountingScorer(), ScanConfig(window_s=4.0, hop_s=2.0, vad=False))
    assert everything.scored == everything.windows > result.scored and everything.scored_s == pytest.approx(everything.windows * 4.0)


def test_a_long_recording_is_streamed_within_a_fixed_memory_bound(tmp_path):
    minutes = 30
    path = tmp_path / "long.wav"
    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", samplerate=8000, channels=2, subtype="PCM_16") as handle:
        for _ in range(minutes):
            handle.write((0.01 * rng.standard_normal((60 * 8000, 2))).astype(np.float32))
    tracemalloc.start()
    try:
        result = scan_file(path, CountingScorer(), ScanConfig(block_s=60.0))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert not result.error and result.duration_s == pytest.approx(minutes * 60, abs=0.1)
    whole = minutes * 60 * SAMPLE_RATE * 4 * 2  # the recording decoded whole: float32, two channels at 16 kHz
    assert peak < 64 * 2**20 < whole, f"peak {peak / 2**20:.0f} MiB while scanning a {minutes}-minute file"


def test_an_unreadable_file_is_reported_and_the_rest_are_scanned(tmp_path):
    from heardet.scan import scan_files

    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    good = tmp_path / "good.wav"
    sf.write(good, noise(3.0, 0), SAMPLE_RATE)
    results = scan_files([bad, good], CountingScorer(), ScanConfig(vad=False), progress=False)
    assert "not readable audio" in results[0].error and results[1].error == "" and results[1].scored == 1


def test_detections_merge_into_events_with_a_refractory_period_and_take_the_best_window_times():
    hits = [(0.0, 8.0, 0.7, None, None), (4.0, 12.0, 0.9, 9.0, 9.6), (13.0, 21.0, 0.6, None, None),
            (40.0, 48.0, 0.8, None, None)]
    events = merge_events("f.wav", "right", hits, refractory_s=2.0)
    assert [(e.start_s, e.end_s, e.score) for e in events] == [(9.0, 9.6, 0.9), (40.0, 48.0, 0.8)]
    assert len(merge_events("f.wav", "right", hits, refractory_s=0.0)) == 3


def test_call_metrics_count_hits_false_accepts_per_hour_and_onsets():
    one = FileScan("a.wav", duration_s=1800.0, channels=("left", "right"), window_scores=[
        ("right", 96.0, 104.0, 0.9, 100.2, 100.8),  # the true event
        ("left", 500.0, 508.0, 0.8, None, None),  # a false accept
        ("right", 900.0, 908.0, 0.3, None, None)])  # below most thresholds
    two = FileScan("b.wav", duration_s=1800.0, channels=("left", "right"),
                   window_scores=[("left", 10.0, 18.0, 0.2, None, None)])
    truth = {"a": [("right", 100.0, 100.7)], "b": []}
    m = call_metrics([one, two], truth, 0.5, 2.0)
    assert (m.event_recall, m.false_accepts, m.hours, m.fa_per_hour) == (1.0, 1, 1.0, 1.0)
    assert m.onset_error_s == pytest.approx(0.2) and m.call_f1 == 1.0
    points = det_points([one, two], truth, 2.0)
    best = operating_point(points, 0.5)
    assert best is not None and best.threshold == 0.9 and best.fa_per_hour == 0
    assert operating_point(points, 5.0).threshold == 0.2, "the lowest threshold within the target"


def test_scan_cli_writes_events_and_a_summary_and_lists_broken_files(burst_model, tmp_path, monkeypatch):
    from heardet.cli import main

    monkeypatch.setattr("heardet.cli.open_model", lambda uri: burst_model)
    audio = np.stack([noise(20.0, 3, 0.02), with_burst(noise(20.0, 4, 0.02), 12.0)], axis=1)
    sf.write(tmp_path / "call.wav", audio, SAMPLE_RATE, subtype="FLOAT")
    (tmp_path / "broken.wav").write_bytes(b"RIFF0000WAVEjunk")
    out = tmp_path / "events.csv"
    result = CliRunner().invoke(main, ["scan", str(tmp_path), "--model", "models:/x/1", "-o", str(out),
                                       "--summary", str(tmp_path / "summary.csv"), "--vad", "false",
                                       "--no-progress"])
    assert result.exit_code == 1, result.output
    events = pd.read_csv(out)
    assert list(events.columns) == ["file", "channel", "start_s", "end_s", "score"]
    assert events.channel.tolist() == ["right"] and abs(events.start_s[0] - 12.0) <= 0.5
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert summary.error.fillna("").str.contains("broken|not readable").any()
    assert "broken.wav" in result.output


def test_synth_calls_write_stereo_telephone_calls_and_their_events(tmp_path):
    from heardet.synth.calls import CALL_RATE, make_calls, read_events
    from heardet.synth.voices import check_tts

    try:
        check_tts(festival=True)
    except RuntimeError as exc:
        pytest.skip(str(exc))
    report = make_calls(tmp_path, 2, minutes=0.5, phrase_share=1.0, progress=False)
    assert report.n_calls == 2 and report.with_phrase == 2
    events = read_events(tmp_path / "events.json")
    for call_id, items in events.items():
        info = sf.info(str(tmp_path / "calls" / f"{call_id}.wav"))
        assert (info.channels, info.samplerate) == (2, CALL_RATE) and info.duration > 20
        assert items and all(channel == "right" and 0 <= a < b <= info.duration for channel, a, b in items)
    rows = [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]
    assert {t["speaker"] for r in rows for t in r["turns"]} == {"left", "right"}
    assert any(t["kind"] == "hard_negative" for r in rows for t in r["turns"]), "no near misses in the calls"
    again = make_calls(tmp_path, 2, minutes=0.5, phrase_share=1.0, progress=False)
    assert again.hours == pytest.approx(report.hours), "a rerun keeps the calls it made"


def test_scan_config_names_the_bad_field():
    with pytest.raises(ValueError, match="hop_s"):
        ScanConfig(window_s=4.0, hop_s=6.0)
    with pytest.raises(ValueError, match="threshold"):
        ScanConfig(threshold=1.5)


def _calls_folder(root: Path) -> Path:
    """Two 16 kHz stereo 'calls' with a burst in the right channel of the first, and their events.json."""
    (root / "calls").mkdir(parents=True)
    first = np.stack([noise(30.0, 5, 0.02), with_burst(noise(30.0, 6, 0.02), 20.0)], axis=1)
    second = np.stack([noise(30.0, 7, 0.02), noise(30.0, 8, 0.02)], axis=1)
    sf.write(root / "calls" / "call_001.wav", first, SAMPLE_RATE, subtype="FLOAT")
    sf.write(root / "calls" / "call_002.wav", second, SAMPLE_RATE, subtype="FLOAT")
    (root / "events.json").write_text(json.dumps({"call_001": [["right", 20.0, 20.5]], "call_002": []}))
    return root


def test_evaluate_on_calls_reports_event_metrics_and_stores_operating_points_that_scan_uses(mlflow_store, tmp_path):
    import mlflow

    from heardet.cli import main
    from heardet.mlops.contract import log_contract_model

    with mlflow.start_run():
        log_contract_model(BurstModel(), "model", registered_model_name="burst",
                           extra_float_columns=("phrase_start_s", "phrase_end_s"))
    calls = _calls_folder(tmp_path / "calls_val")
    runner = CliRunner()
    result = runner.invoke(main, ["evaluate", str(calls), "--model", "models:/burst/1", "--vad", "false",
                                  "--store-operating-points", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "event recall 1.000 of 1" in result.output and "0 false accepts" in result.output, result.output
    assert "operating points of burst version 1" in result.output
    tags = mlflow.MlflowClient().get_model_version("burst", "1").tags
    assert float(tags["heardet.scan_threshold_fah_0.5"]) > 0
    scanned = runner.invoke(main, ["scan", str(calls / "calls"), "--model", "models:/burst/1", "--target-fah", "0.5",
                                   "--vad", "false", "-o", str(tmp_path / "events.csv"), "--no-progress"])
    assert scanned.exit_code == 0, scanned.output
    assert pd.read_csv(tmp_path / "events.csv").channel.tolist() == ["right"]
    missing = runner.invoke(main, ["scan", str(calls / "calls"), "--model", "models:/burst/1", "--target-fah", "2",
                                   "--no-progress"])
    assert missing.exit_code == 2 and "no operating point for 2 FA/h" in missing.output


def test_the_scan_entry_point_logs_events_call_metrics_and_a_det_plot(mlflow_store, tmp_path):
    import mlflow

    from entrypoints.scan import main as entry
    from heardet.mlops.contract import log_contract_model

    with mlflow.start_run():
        info = log_contract_model(BurstModel(), "model", extra_float_columns=("phrase_start_s", "phrase_end_s"))
    calls = _calls_folder(tmp_path / "calls_test")
    result = CliRunner().invoke(entry, ["--model-uri", info.model_uri, "--inputs", str(calls), "--vad", "false"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    run = mlflow.search_runs(filter_string="tags.approach = 'scan'", output_format="list")[0]
    assert run.data.metrics["event_recall"] == 1.0 and run.data.metrics["fa_per_hour"] == 0.0
    assert run.data.metrics["call_macro_f1"] == 1.0 and run.data.metrics["scan_x_real_time"] > 0
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "plots")}
    assert "plots/det.png" in artifacts
    events = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/scan/events.csv")
    assert "right" in events and "left" not in events


def test_mine_adds_false_alarms_as_voice_grouped_negatives_once(burst_model, tmp_path, monkeypatch, tiny_dataset):
    from heardet.cli import main
    from heardet.data import load_dataset

    calls = _calls_folder(tmp_path / "calls_mine")
    (calls / "events.json").write_text(json.dumps({"call_001": [], "call_002": []}))  # the burst is a false alarm
    (calls / "calls.jsonl").write_text("".join(json.dumps({"id": c, "agent": "espeak-ng/ru+m1/f2", "customer":
                                                           "festival/msu_ru_nsh/f3p+1"}) + "\n"
                                               for c in ("call_001", "call_002")))
    monkeypatch.setattr("heardet.cli.open_model", lambda uri: burst_model)
    before = len(load_dataset(tiny_dataset).train)
    args = ["mine", str(calls), "--model", "models:/x/1", "--data", str(tiny_dataset), "--vad", "false",
            "--no-progress"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    train = load_dataset(tiny_dataset).train
    mined = [c for c in train if c.id.startswith("mined_call_001_right")]
    assert mined and all(c.label == 0 and c.meta["kind"] == "mined" for c in mined)
    assert mined[0].meta["voice"] == "festival/msu_ru_nsh/f3p+1" and mined[0].meta["engine"] == "festival"
    assert len(train) == before + len(mined)
    assert CliRunner().invoke(main, args).exit_code == 0 and len(load_dataset(tiny_dataset).train) == len(train)
