"""Shared fixtures: tests make their own audio in tmp_path and never touch the network."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a test that reaches for the hub fails at once
os.environ.setdefault("TQDM_DISABLE", "1")


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
        mono = tone(seconds, sr, freq)
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
