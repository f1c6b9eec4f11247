"""Shared fixtures: tests make their own audio in tmp_path and never touch the network."""

from __future__ import annotations

import json
import os
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a test that reaches for the hub fails at once
os.environ.setdefault("TQDM_DISABLE", "1")

CHECKOUT = Path(__file__).resolve().parents[1]
NOT_CHECKED = (".venv", ".pytest_cache", "__pycache__")  # what running Python and pytest may leave
CHECKOUT_KEY = pytest.StashKey[set]()


def checkout_state(root: Path = CHECKOUT) -> set[str] | None:
    """Every changed, untracked and ignored file under ``root`` (``git status --porcelain
    --ignored``, file by file) apart from :data:`NOT_CHECKED`; None outside a git checkout."""
    excludes = [":(exclude,glob)**/" + name + "/**" for name in NOT_CHECKED]
    try:
        out = subprocess.run(
            ["git", "-c", "core.quotePath=false", "status", "--porcelain", "--ignored", "--untracked-files=all",
             "--", ".", *excludes],
            cwd=root, capture_output=True, text=True, timeout=60, check=False,
            env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"})  # a read-only look: no index refresh
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None  # not a git checkout (an unpacked sdist, a copy) or no git
    return set(out.stdout.splitlines())


def pytest_sessionstart(session):
    """Note what the checkout holds before any test runs."""
    session.config.stash[CHECKOUT_KEY] = checkout_state()


def pytest_sessionfinish(session, exitstatus):
    """Fail the run when the tests left files in the checkout: each test writes under its tmp_path."""
    before = session.config.stash.get(CHECKOUT_KEY, None)
    after = checkout_state() if before is not None else None
    if after is None:
        return
    new = sorted(after - before)
    if new:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.ensure_newline()
            reporter.write_sep("=", "the tests wrote into the checkout (write under tmp_path instead)", red=True)
            for line in new[:30]:
                reporter.write_line(f"  {line}")
            if len(new) > 30:
                reporter.write_line(f"  … and {len(new) - 30} more")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def tone(seconds: float = 1.0, sr: int = 16_000, freq: float = 440.0, amp: float = 0.3, seed: int = 0) -> np.ndarray:
    """A sine tone with a little noise, float32 mono."""
    t = np.arange(int(seconds * sr)) / sr
    noise = np.random.default_rng(seed).normal(0, 0.01, t.shape)
    return (amp * np.sin(2 * np.pi * freq * t) + noise).astype(np.float32)


@pytest.fixture
def write_audio(tmp_path: Path):
    """Factory: write_audio("name.wav", seconds=1, sr=16000, channels=1, fmt=None) -> Path."""

    def _write(name: str, seconds: float = 1.0, sr: int = 16_000, channels: int = 1,
               freq: float = 440.0, directory: Path | None = None, **kwargs) -> Path:
        path = (directory or tmp_path) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        mono = tone(seconds, sr, freq, seed=zlib.crc32(name.encode()))
        data = np.stack([mono] * channels, axis=1) if channels > 1 else mono
        sf.write(path, data, sr, **kwargs)
        return path

    return _write


@pytest.fixture
def tiny_dataset(tmp_path: Path, write_audio) -> Path:
    """A 6-train / 4-test dataset of tones: train_0..2 are 'positives' in word_bounds.json."""
    root = tmp_path / "data"
    for i in range(6):
        write_audio(f"train_{i}.wav", seconds=1.0 + 0.1 * i, freq=300 + 50 * i, directory=root / "wav_train")
    for i in range(4):
        write_audio(f"test_{i}.wav", seconds=1.2, freq=500 + 30 * i, directory=root / "wav_test")
    (root / "word_bounds.json").write_text(json.dumps({f"train_{i}": [[0.2, 0.8]] for i in range(3)}))
    (root / "test_labels.csv").write_text("id,label\ntest_0,1\ntest_1,0\ntest_2,1\ntest_3,0\n")
    return root


POSITIVE_HZ, NEGATIVE_HZ = 300.0, 600.0


class FakeTranscriber:
    """Stands in for Whisper: 'hears' «не слышу» in a 300 Hz tone and «слышу» in anything else."""

    backend = "fake"

    def __init__(self, model="fake", options=None):
        from heardet.whisper.asr import DecodeOptions

        self.model, self.options = model, options or DecodeOptions()
        self.calls = 0

    @property
    def identity(self):
        return f"fake|{self.model}"

    def transcribe_arrays(self, audios):
        from heardet.whisper.asr import Transcript

        self.calls += len(audios)
        out = []
        for audio in audios:
            hz = np.argmax(np.abs(np.fft.rfft(audio))) * 16_000 / len(audio)
            text = "алло, я вас не слышу" if abs(hz - POSITIVE_HZ) < 50 else "да, я вас слышу хорошо"
            out.append(Transcript(text, "ru", len(audio) / 16_000))
        return out

    def transcribe(self, *args, **kwargs):
        from heardet.whisper.asr import Transcriber

        return Transcriber.transcribe(self, *args, **kwargs)


@pytest.fixture(autouse=True)
def private_cache(request, monkeypatch, tmp_path_factory):
    """Every fast test caches (transcripts, encoder features, converted models) under its own tmp folder;
    slow tests use the real cache, where the converted Whisper base lives."""
    if request.node.get_closest_marker("slow") is None:
        monkeypatch.setenv("HEARDET_CACHE", str(tmp_path_factory.mktemp("heardet-cache")))


@pytest.fixture
def fake_asr(monkeypatch, tmp_path):
    """Replace Whisper with FakeTranscriber everywhere and point caches at tmp_path."""
    import heardet.whisper.asr

    monkeypatch.setenv("HEARDET_CACHE", str(tmp_path / "cache"))
    made = []

    def make(model="whisper-base", backend="auto", options=None, device="auto"):
        made.append(FakeTranscriber(model, options))
        return made[-1]

    monkeypatch.setattr(heardet.whisper.asr, "make_transcriber", make)
    return made


@pytest.fixture
def phrase_dataset(tmp_path: Path, write_audio) -> Path:
    """8 train (4 positive) and 4 test (2 positive) tone clips; the fake ASR 'hears' positives."""
    root = tmp_path / "phrase_data"
    bounds = {}
    for i in range(8):
        positive = i % 2 == 0
        write_audio(f"tr_{i}.wav", seconds=1.0 + 0.05 * i, freq=POSITIVE_HZ if positive else NEGATIVE_HZ,
                    directory=root / "wav_train")
        if positive:
            bounds[f"tr_{i}"] = [[0.1, 0.9]]
    labels = []
    for i in range(4):
        positive = i < 2
        write_audio(f"te_{i}.wav", seconds=1.1, freq=POSITIVE_HZ if positive else NEGATIVE_HZ,
                    directory=root / "wav_test")
        labels.append(f"te_{i},{int(positive)}")
    (root / "word_bounds.json").write_text(json.dumps(bounds))
    (root / "test_labels.csv").write_text("id,label\n" + "\n".join(labels) + "\n")
    return root


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    """A real MLflow tracking store (SQLite) and artifact root in tmp_path, which is also the
    current directory while the test runs."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    monkeypatch.chdir(tmp_path)  # MLflow's defaults (./mlruns, ./mlflow.db) land here, never in the checkout
    experiment = mlflow.create_experiment("test", artifact_location=(tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", experiment)  # set_experiment exports it; undo after the test
    mlflow.set_experiment(experiment_id=experiment)
    yield uri
    mlflow.end_run()


@pytest.fixture(scope="session")
def tiny_hf_whisper(tmp_path_factory) -> Path:
    """A random 2+2-layer Whisper (d_model 32) with a feature extractor, saved as a local
    Hugging Face directory: usable anywhere a model name is (``--model DIR``)."""
    import torch
    from transformers import (
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
    )

    root = tmp_path_factory.mktemp("tiny-whisper")
    config = WhisperConfig(
        d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
        encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=80, max_source_positions=1500,
        max_target_positions=64, vocab_size=128, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        decoder_start_token_id=1, suppress_tokens=[], begin_suppress_tokens=[],
    )
    torch.manual_seed(0)
    WhisperForConditionalGeneration(config).save_pretrained(root)
    WhisperFeatureExtractor().save_pretrained(root)
    return root
