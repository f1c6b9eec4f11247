"""heardet.augment: the one chain synth and training use — deterministic per seed, length-keeping, never clipping."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from heardet.audio import write_wav
from heardet.augment import AugmentConfig, AugmentPlan, Banks, apply, augment, draw, make_rirs

EVERYTHING = AugmentConfig(noise_prob=1, speech_prob=1, reverb_prob=1, telephone_prob=1, codec_prob=1,
                           clipping_prob=1)


def speech_like(seconds: float = 1.5, seed: int = 0) -> np.ndarray:
    """An amplitude-modulated harmonic tone: enough structure for every step to change it."""
    t = np.arange(int(seconds * 16000)) / 16000
    rng = np.random.default_rng(seed)
    tone = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((140, 280, 420, 900, 2500), 1))
    return (0.3 * tone * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)) + 0.01 * rng.standard_normal(len(t))).astype(
        np.float32) / 2


@pytest.fixture(scope="module")
def banks(tmp_path_factory) -> Banks:
    root = tmp_path_factory.mktemp("banks")
    make_rirs(root / "rirs", 3, seed=0)
    (root / "speech").mkdir()
    for k in range(2):
        write_wav(root / "speech" / f"speech_{k:03d}.wav", speech_like(3.0, seed=k + 10))
    return Banks(root)


def test_the_same_seed_gives_the_same_plan_and_the_same_samples(banks):
    audio = speech_like()
    for seed in range(5):
        first = augment(audio, np.random.default_rng(seed), banks, EVERYTHING)
        again = augment(audio, np.random.default_rng(seed), banks, EVERYTHING)
        assert np.array_equal(first, again), f"seed {seed} gave different audio twice"
    plans = {draw(EVERYTHING, np.random.default_rng(seed), banks) for seed in range(5)}
    assert len(plans) == 5, "different seeds drew the same plan"


def test_a_different_seed_gives_different_audio(banks):
    audio = speech_like()
    outs = [augment(audio, np.random.default_rng(seed), banks, EVERYTHING) for seed in (1, 2)]
    assert not np.allclose(outs[0], outs[1])


def test_augmenting_leaves_the_global_random_state_alone(banks):
    import random

    random.seed(3)
    np.random.seed(3)
    expected = (random.random(), np.random.random())
    random.seed(3)
    np.random.seed(3)
    augment(speech_like(), np.random.default_rng(0), banks, EVERYTHING)
    assert (random.random(), np.random.random()) == expected


@pytest.mark.parametrize("step", [
    {"reverb": "rir_001.wav"}, {"speech": "speech_000.wav", "speech_snr_db": 5.0},
    {"noise_decay_db": -3.0, "noise_snr_db": 10.0}, {"telephone": "band"}, {"telephone": "gsm"},
    {"codec": "mp3", "codec_kbps": 24}, {"codec": "opus", "codec_kbps": 24}, {"clipping_percentile": 10},
])
def test_every_step_changes_the_audio_keeps_its_length_and_never_clips(banks, step):
    audio = speech_like()
    out = apply(AugmentPlan(seed=1, gain_db=20.0, **step), audio, banks)  # a gain that would clip
    assert out.dtype == np.float32 and len(out) == len(audio), step
    assert np.max(np.abs(out)) <= 0.99 + 1e-6, f"{step} clipped"
    plain = apply(AugmentPlan(seed=1, gain_db=20.0), audio, banks)
    assert not np.allclose(out, plain, atol=1e-4), f"{step} changed nothing"


def test_a_telephone_line_removes_what_lies_above_its_band(banks):
    t = np.arange(16000) / 16000
    high = (0.3 * np.sin(2 * np.pi * 6000 * t)).astype(np.float32)
    out = apply(AugmentPlan(seed=0, telephone="band"), high, banks)
    assert np.sqrt(np.mean(out**2)) < 0.01 * np.sqrt(np.mean(high**2))


def test_a_plan_naming_a_missing_bank_file_says_which(banks):
    with pytest.raises(FileNotFoundError, match="rirs/nope.wav"):
        apply(AugmentPlan(seed=0, reverb="nope.wav"), speech_like(), banks)


def test_steps_whose_bank_is_empty_are_never_drawn():
    plans = [draw(EVERYTHING, np.random.default_rng(s), Banks()) for s in range(20)]
    assert all(p.reverb is None and p.speech is None for p in plans)
    assert all(p.noise_snr_db is not None and p.telephone for p in plans)


def test_rooms_are_made_once_and_deterministically(tmp_path):
    first = make_rirs(tmp_path / "a", 2, seed=4)
    second = make_rirs(tmp_path / "b", 2, seed=4)
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]
    before = [p.stat().st_mtime_ns for p in first]
    make_rirs(tmp_path / "a", 2, seed=4)
    assert [p.stat().st_mtime_ns for p in first] == before


@pytest.mark.parametrize("field, value", [("noise_prob", 1.5), ("snr_db", (30.0, 5.0)), ("gain_db", 3.0)])
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=rf"AugmentConfig\.{field}="):
        replace(AugmentConfig(), **{field: value})
