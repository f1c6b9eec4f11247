"""`kill -9` in the middle of synth, transcribe, tune and finetune: the rerun completes, reuses what
was finished, and nothing is corrupt. Two processes filling one transcript cache at once both
finish. Every run is a real subprocess killed by SIGKILL at a point it has visibly reached."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
import soundfile as sf
from ct2_fixture import write_tiny_ct2
from test_approaches_text import run_entrypoint
from test_synth import needs_tts

from heardet.whisper.cache import TranscriptCache

ROOT = Path(__file__).resolve().parents[1]
HEARDET = [str(Path(sys.executable).parent / "heardet")]  # the console script


def kill_when(command: list[str], reached, env: dict, timeout_s: float = 240) -> None:
    """Start ``command``; SIGKILL its process group as soon as ``reached()`` holds while it still runs."""
    process = subprocess.Popen(command, env={**os.environ, **env}, cwd=ROOT, start_new_session=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + timeout_s
    try:
        while not reached():
            if process.poll() is not None:
                pytest.fail(f"finished before the kill point: {process.stdout.read().decode()[-3000:]}")
            if time.time() > deadline:
                pytest.fail("never reached the kill point")
            time.sleep(0.05)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL, f"killed mid-run, got exit {process.returncode}"


def run(command: list[str], env: dict, timeout_s: float = 300) -> subprocess.CompletedProcess:
    done = subprocess.run(command, env={**os.environ, **env}, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout_s)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def tiny_ct2(tmp_path_factory):
    return write_tiny_ct2(tmp_path_factory.mktemp("tiny"), source_positions=1500, target_positions=448)


@pytest.fixture
def clips(tmp_path, write_audio) -> Path:
    for i in range(24):
        write_audio(f"c{i:02d}.wav", seconds=1.0 + 0.1 * (i % 7), freq=300 + 40 * i, directory=tmp_path / "clips")
    return tmp_path / "clips"


@needs_tts
@pytest.mark.timeout(600)
def test_synth_killed_mid_run_resumes_and_every_clip_is_whole(tmp_path):
    out = tmp_path / "data"
    command = HEARDET + ["synth", "--out", str(out), "--n-train", "16", "--n-test", "8", "--workers", "2",
                         "--no-progress"]
    manifest = out / "manifest.jsonl"
    kill_when(command, lambda: manifest.exists() and manifest.read_text().count("\n") >= 4, {})
    done = run(command, {})
    kept = int(done.stdout.split("kept ")[1].split()[0])
    assert kept >= 4, done.stdout
    rows = [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines() if line.endswith("}")]
    assert len({r["id"] for r in rows}) == 24
    for wav in out.glob("wav_*/*.wav"):
        audio, sr = sf.read(wav)
        assert sr == 16_000 and len(audio) > 1600 and np.isfinite(audio).all(), wav


def test_transcribe_killed_mid_run_reuses_its_cache_entries_and_none_is_corrupt(tiny_ct2, clips, tmp_path):
    env = {"HEARDET_CACHE": str(tmp_path / "cache")}
    cache = TranscriptCache(tmp_path / "cache" / "transcripts")
    command = HEARDET + ["transcribe", str(clips), "--model", str(tiny_ct2.ct2_dir), "--no-progress",
                         "-o", str(tmp_path / "t.csv")]
    kill_when(command, lambda: len(list(cache.root.glob("??/*.json"))) >= 3, env)
    before, _ = cache.verify()
    done = run(command, env)
    reused = int(re.search(r"(\d+) from cache", done.stdout).group(1))
    assert before >= 3 and reused >= before, done.stdout
    good, bad = cache.verify()
    assert (good, bad) == (24, []), f"{len(bad)} corrupt entries: {bad[:3]}"


def test_two_processes_filling_one_cache_at_once_both_finish_and_every_entry_verifies(tiny_ct2, clips, tmp_path):
    env = {**os.environ, "HEARDET_CACHE": str(tmp_path / "cache")}
    workers = [subprocess.Popen(HEARDET + ["transcribe", str(clips), "--model", str(tiny_ct2.ct2_dir), "--no-progress",
                                           "-o", str(tmp_path / f"t{i}.csv")], env=env, cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for i in range(2)]
    outputs = [w.communicate(timeout=300)[0].decode() for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    good, bad = TranscriptCache(tmp_path / "cache" / "transcripts").verify()
    assert (good, bad) == (24, []), outputs
    texts = [(tmp_path / f"t{i}.csv").read_text() for i in range(2)]
    assert texts[0] == texts[1], "both saw the same transcripts"


@pytest.mark.timeout(600)
def test_tune_killed_mid_trial_leaves_no_trial_running_after_the_rerun(tiny_hf_whisper, phrase_dataset, mlflow_store,
                                                                       tmp_path, monkeypatch):
    import optuna

    import heardet.approaches.finetune.tune as tune_module

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    args = ["--data", str(phrase_dataset), "--model", str(tiny_hf_whisper), "--n-folds", "2", "--max-seconds", "2",
            "--epochs", "3", "--storage", storage, "--study-name", "crash"]

    def running() -> bool:
        try:
            trials = optuna.load_study(study_name="crash", storage=storage).get_trials(deepcopy=False)
        except Exception:  # noqa: BLE001 - not created yet, or the file is being written
            return False
        return any(t.state == optuna.trial.TrialState.RUNNING and "mlflow_run_id" in t.user_attrs for t in trials)

    kill_when([sys.executable, "entrypoints/tune.py", *args, "--n-trials", "3"], running,
              {"MLFLOW_TRACKING_URI": mlflow_store, "TQDM_DISABLE": "1"})
    killed = [t for t in optuna.load_study(study_name="crash", storage=storage).trials
              if t.state == optuna.trial.TrialState.RUNNING]
    assert len(killed) == 1
    monkeypatch.setattr(tune_module, "GRACE_S", 1)  # the killed worker's last heartbeat is older than this
    # SQLite keeps heartbeats to the whole second and Optuna wants them strictly older than the grace period:
    # 1.5 s could still read as exactly 1 s apart. Past 2 s they always read as 2 s or more.
    time.sleep(2.5)
    run = run_entrypoint("tune", [*args, "--n-trials", "2"])
    study = optuna.load_study(study_name="crash", storage=storage)
    states = [t.state for t in study.trials]
    assert optuna.trial.TrialState.RUNNING not in states, states
    assert study.trials[killed[0].number].state == optuna.trial.TrialState.FAIL
    assert sum(s == optuna.trial.TrialState.COMPLETE for s in states) >= 2 - int(run.data.metrics.get("n_pruned", 0))
    stale = mlflow.get_run(killed[0].user_attrs["mlflow_run_id"])
    assert stale.info.status == "KILLED" and "no heartbeat" in stale.data.tags["error"]


@pytest.mark.timeout(600)
def test_finetune_killed_mid_run_reuses_the_encoded_features(tiny_hf_whisper, phrase_dataset, mlflow_store,
                                                             tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("HEARDET_CACHE", str(cache))
    args = ["--data", str(phrase_dataset), "--model", str(tiny_hf_whisper), "--n-folds", "2", "--max-seconds", "2",
            "--encoder-lr", "0", "--epochs", "40", "--out", str(tmp_path / "out")]
    features = cache / "features"
    kill_when([sys.executable, "entrypoints/finetune.py", *args], lambda: len(list(features.rglob("*.npy"))) >= 8,
              {"MLFLOW_TRACKING_URI": mlflow_store, "HEARDET_CACHE": str(cache), "TQDM_DISABLE": "1"})
    stored = sorted(features.rglob("*.npy"))
    for path in stored:
        assert np.load(path).ndim == 3, f"{path} is whole"
    mtimes = {p: p.stat().st_mtime_ns for p in stored}
    run = run_entrypoint("finetune", args)
    assert "test_macro_f1" in run.data.metrics
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items()), "features made before the kill were reused"
