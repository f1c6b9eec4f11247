"""What a clip goes through after it is voiced: reverberation, noise, telephone band and gain."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from heardet.audio import SAMPLE_RATE, resample
from heardet.synth.plan import ClipPlan
from heardet.synth.voices import espeak, trim

NOISE_FLOOR = 3e-4  # std of the white noise floor every clip gets (about -70 dBFS), so pauses are not digital zero


def noise(plan: ClipPlan, n: int, rng: np.random.Generator) -> np.ndarray:
    """White, pink (1/f power) or babble (other TTS voices talking) noise of ``n`` samples."""
    if plan.augment.noise == "white":
        return rng.standard_normal(n)
    if plan.augment.noise == "pink":
        spectrum = np.fft.rfft(rng.standard_normal(n))
        return np.fft.irfft(spectrum / np.sqrt(np.maximum(np.arange(len(spectrum)), 1.0)), n)
    mix = np.zeros(n)
    for speaker in plan.babble:
        speech = trim(espeak(speaker.text, speaker.voice, speaker.rate), speaker.text)
        speech = np.tile(speech, n // len(speech) + 1)
        start = int(rng.integers(len(speech) - n + 1))
        mix += speech[start : start + n] / (np.sqrt(np.mean(speech**2)) + 1e-9)
    return mix


def augment(plan: ClipPlan, speech: np.ndarray, speech_power: float) -> tuple[np.ndarray, dict]:
    """Reverb, additive noise at the planned SNR, telephone band, gain.

    Returns:
        The audio, and what was applied (the plan's augmentation, with the gain lowered where
        the planned one would clip).
    """
    from dataclasses import asdict

    from scipy.signal import butter, fftconvolve, sosfiltfilt

    aug = plan.augment
    rng = plan.rng(1)
    audio = speech.astype(np.float64)
    if aug.reverb:
        t = np.arange(int(aug.reverb * SAMPLE_RATE)) / SAMPLE_RATE
        response = rng.standard_normal(len(t)) * np.exp(-6.9 * t / aug.reverb) * 0.3
        response[0] = 1.0  # the direct path keeps the onsets where the bounds say
        wet = fftconvolve(audio, response)[: len(audio)]
        audio = wet * np.sqrt(np.mean(audio**2) / (np.mean(wet**2) + 1e-12))
    if aug.noise:
        added = noise(plan, len(audio), rng)
        audio = audio + added * np.sqrt(speech_power / 10 ** (aug.snr_db / 10) / (np.mean(added**2) + 1e-12))
    audio = audio + rng.standard_normal(len(audio)) * NOISE_FLOOR
    if aug.telephone:
        audio = resample(resample(audio.astype(np.float32), SAMPLE_RATE, 8000), 8000, SAMPLE_RATE)[: len(audio)]
        audio = sosfiltfilt(butter(4, (300, 3400), btype="bandpass", fs=SAMPLE_RATE, output="sos"), audio)
    gain = 10 ** (aug.gain_db / 20)
    peak = float(np.max(np.abs(audio))) * gain
    if peak > 0.99:  # never clip: lower the gain instead and record what was applied
        gain *= 0.99 / peak
        aug = replace(aug, gain_db=round(20 * math.log10(gain), 2))
    return (audio * gain).astype(np.float32), asdict(aug)
