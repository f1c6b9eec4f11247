"""What a clip goes through on its way to the model: noise, background speech, a room, a phone line, a codec.

One chain serves both :mod:`heardet.synth` (clips written to disk) and fine-tune training (clips
augmented on the fly). Every choice is drawn up front into an :class:`AugmentPlan` from a
``numpy`` generator, so a plan is data (it goes into the synth manifest) and the same plan on the
same audio gives the same samples. The signal processing is library code:

- audiomentations: coloured noise (``AddColorNoise``), background speech (``AddBackgroundNoise``),
  room impulse responses (``ApplyImpulseResponse``), ``Gain`` and ``ClippingDistortion``;
- pedalboard: the telephone line (300-3400 Hz band, 8 kHz round trip, GSM full-rate codec) and MP3;
- libsndfile (soundfile): Opus.

Room impulse responses come from pyroomacoustics (image-source shoebox rooms) and background speech
from the synth voices; both live in a :class:`Banks` folder (``<data>/augment/`` for a synth dataset).
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from heardet.audio import SAMPLE_RATE, write_wav
from heardet.config import FRACTION, is_range, setting, validate

logger = logging.getLogger(__name__)

BANKS_DIR = "augment"  # inside a dataset folder
RIR_RT60_S = (0.15, 0.8)  # reverberation time of the generated rooms, seconds
ROOM_SIZE_M = ((3.0, 9.0), (2.5, 7.0), (2.4, 3.5))  # x, y, z ranges of a generated room, metres
NOISE_DECAY_DB = (-6.0, 3.0)  # coloured noise spectral slope per octave: -6 brown, -3 pink, 0 white, +3 blue
MP3_KBPS = (16, 64)
OPUS_SAMPLE_RATE = 16000  # libsndfile's Opus accepts 8/12/16/24/48 kHz; 16 kHz keeps the clip's rate
CLIP_PERCENTILE = (1, 20)  # ClippingDistortion: share of samples (percent) above the clipping level
CODECS = ("mp3", "opus", "gsm")
PEAK = 0.99  # the chain never leaves a sample above this (clipping is a step of its own)


@dataclass(frozen=True)
class AugmentConfig:
    """How often each step happens (probability per clip) and its range; validated on creation."""

    noise_prob: float = setting(0.4, *FRACTION, "Probability per clip of coloured noise (white to brown).")
    snr_db: tuple[float, float] = setting((5.0, 30.0), "a (low, high) pair in dB with -20 <= low <= high <= 80",
                                          is_range(-20.0, 80.0), "Noise and background-speech SNR range, dB.")
    speech_prob: float = setting(0.25, *FRACTION, "Probability per clip of background speech.")
    reverb_prob: float = setting(0.35, *FRACTION, "Probability per clip of a room impulse response.")
    telephone_prob: float = setting(0.3, *FRACTION,
                                    "Probability per clip of a phone line (300-3400 Hz, 8 kHz, half with GSM).")
    codec_prob: float = setting(0.2, *FRACTION, "Probability per clip of MP3 or Opus compression.")
    clipping_prob: float = setting(0.05, *FRACTION, "Probability per clip of clipping distortion.")
    gain_db: tuple[float, float] = setting((-12.0, 3.0), "a (low, high) pair in dB with -60 <= low <= high <= 20",
                                           is_range(-60.0, 20.0), "Gain range, dB (the result never clips).")

    def __post_init__(self) -> None:
        validate(self)
        for name in ("snr_db", "gain_db"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))


@dataclass(frozen=True)
class AugmentPlan:
    """Every choice for one clip; ``None`` where a step is skipped. Steps run in field order."""

    seed: int  # seeds the samples a step draws itself (noise, background offset)
    reverb: str | None = None  # impulse response file name in the bank
    speech: str | None = None  # background speech file name in the bank
    speech_snr_db: float | None = None
    noise_decay_db: float | None = None  # coloured noise slope per octave
    noise_snr_db: float | None = None
    telephone: str | None = None  # "band" or "gsm"
    codec: str | None = None  # one of CODECS; "gsm" only as part of the telephone line
    codec_kbps: int | None = None
    clipping_percentile: int | None = None
    gain_db: float = 0.0

    def describe(self) -> dict[str, Any]:
        """The steps that apply, for a manifest row."""
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class Banks:
    """The recordings the chain draws from: room impulse responses and background speech (wav files)."""

    root: Path | None = None

    def files(self, kind: str) -> list[Path]:
        return sorted((self.root / kind).glob("*.wav")) if self.root and (self.root / kind).is_dir() else []

    @property
    def rirs(self) -> list[Path]:
        return self.files("rirs")

    @property
    def speech(self) -> list[Path]:
        return self.files("speech")

    @classmethod
    def of_dataset(cls, data_dir: str | Path) -> Banks:
        """The banks a synth dataset carries (``<data>/augment/``); empty banks when it has none."""
        return cls(Path(data_dir) / BANKS_DIR)


def make_rirs(out_dir: Path, count: int, seed: int) -> list[Path]:
    """``count`` shoebox-room impulse responses (RT60 in :data:`RIR_RT60_S`), made once, deterministic per seed.

    Files already there are kept, so a second call costs nothing.
    """
    import pyroomacoustics as pra

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(count):
        path = out_dir / f"rir_{k:03d}.wav"
        paths.append(path)
        if path.is_file():
            continue
        rng = np.random.default_rng([seed, 7, k])
        dims = [float(rng.uniform(*r)) for r in ROOM_SIZE_M]
        rt60 = float(rng.uniform(*RIR_RT60_S))
        absorption, max_order = pra.inverse_sabine(rt60, dims)
        room = pra.ShoeBox(dims, fs=SAMPLE_RATE, materials=pra.Material(absorption), max_order=min(max_order, 80))
        source = [float(rng.uniform(0.5, d - 0.5)) for d in dims]
        mic = [min(max(s + float(rng.uniform(-2.0, 2.0)), 0.4), d - 0.4) for s, d in zip(source, dims)]
        room.add_source(source)
        room.add_microphone(mic)
        room.compute_rir()
        response = np.asarray(room.rir[0][0], dtype=np.float32)
        write_wav(path, response / (np.max(np.abs(response)) + 1e-12))
    return paths


def draw(config: AugmentConfig, rng: np.random.Generator, banks: Banks) -> AugmentPlan:
    """Draw one clip's plan. A step whose bank is empty is skipped."""
    rirs, speech = banks.rirs, banks.speech
    values: dict[str, Any] = {"seed": int(rng.integers(2**31))}
    if rng.random() < config.reverb_prob and rirs:
        values["reverb"] = rirs[int(rng.integers(len(rirs)))].name
    if rng.random() < config.speech_prob and speech:
        values["speech"] = speech[int(rng.integers(len(speech)))].name
        values["speech_snr_db"] = round(float(rng.uniform(*config.snr_db)), 2)
    if rng.random() < config.noise_prob:
        values["noise_decay_db"] = round(float(rng.uniform(*NOISE_DECAY_DB)), 2)
        values["noise_snr_db"] = round(float(rng.uniform(*config.snr_db)), 2)
    if rng.random() < config.telephone_prob:
        values["telephone"] = "gsm" if rng.random() < 0.5 else "band"
    if rng.random() < config.codec_prob:
        values["codec"] = CODECS[int(rng.integers(2))]
        values["codec_kbps"] = int(rng.integers(MP3_KBPS[0], MP3_KBPS[1] + 1))
    if rng.random() < config.clipping_prob:
        values["clipping_percentile"] = int(rng.integers(CLIP_PERCENTILE[0], CLIP_PERCENTILE[1] + 1))
    values["gain_db"] = round(float(rng.uniform(*config.gain_db)), 2)
    return AugmentPlan(**values)


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """audiomentations draws from ``random`` and ``numpy.random``: seed both, then put them back as they were."""
    state, np_state = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        random.setstate(state)
        np.random.set_state(np_state)


def _opus(audio: np.ndarray, kbps: int) -> np.ndarray:
    """An Opus round trip through libsndfile (its quality setting stands in for the bit rate)."""
    import soundfile as sf

    buffer = io.BytesIO()
    quality = 1.0 - (kbps - MP3_KBPS[0]) / (MP3_KBPS[1] - MP3_KBPS[0])  # libsndfile: 0 best .. 1 smallest
    sf.write(buffer, audio, OPUS_SAMPLE_RATE, format="OGG", subtype="OPUS",
             compression_level=float(np.clip(quality, 0.0, 1.0)))
    buffer.seek(0)
    decoded, _ = sf.read(buffer, dtype="float32")
    return _same_length(decoded, len(audio))


def _same_length(audio: np.ndarray, n: int) -> np.ndarray:
    return audio[:n] if len(audio) >= n else np.concatenate([audio, np.zeros(n - len(audio), np.float32)])


@functools.lru_cache(maxsize=128)
def _room(path: Path):
    """One ``ApplyImpulseResponse`` per impulse response, kept: it reads its file once, not once per clip."""
    import audiomentations as am

    return am.ApplyImpulseResponse([path], p=1.0, leave_length_unchanged=True)


def apply(plan: AugmentPlan, audio: np.ndarray, banks: Banks) -> np.ndarray:
    """Run ``plan`` on 16 kHz mono float32 ``audio``; the result has the same length and never clips.

    The speech keeps its timing: impulse responses are applied with their direct path in place
    (``leave_length_unchanged``), so phrase bounds measured on the clean speech still hold.

    Raises:
        FileNotFoundError: the plan names a bank file that is not in ``banks``.
    """
    import audiomentations as am
    import pedalboard as pb

    samples = np.asarray(audio, dtype=np.float32)
    n = len(samples)
    root = banks.root
    for kind, name in (("rirs", plan.reverb), ("speech", plan.speech)):
        if name and not (root and (root / kind / name).is_file()):
            raise FileNotFoundError(f"augmentation bank file {kind}/{name} is missing under {root}")
    with _seeded(plan.seed):
        if plan.reverb:
            samples = _room(root / "rirs" / plan.reverb)(samples, SAMPLE_RATE)
        if plan.speech:
            background = am.AddBackgroundNoise([root / "speech" / plan.speech], min_snr_db=plan.speech_snr_db,
                                               max_snr_db=plan.speech_snr_db, p=1.0)
            samples = background(samples, SAMPLE_RATE)
        if plan.noise_snr_db is not None:
            noise = am.AddColorNoise(min_snr_db=plan.noise_snr_db, max_snr_db=plan.noise_snr_db,
                                     min_f_decay=plan.noise_decay_db, max_f_decay=plan.noise_decay_db, p=1.0)
            samples = noise(samples, SAMPLE_RATE)
    if plan.telephone:
        line = [pb.HighpassFilter(300.0), pb.LowpassFilter(3400.0), pb.Resample(8000)]
        line += [pb.GSMFullRateCompressor()] if plan.telephone == "gsm" else []
        samples = _same_length(pb.Pedalboard(line)(samples, SAMPLE_RATE), n)
    if plan.codec == "mp3":
        samples = _same_length(pb.MP3Compressor(vbr_quality=_mp3_quality(plan.codec_kbps))(samples, SAMPLE_RATE), n)
    elif plan.codec == "opus":
        samples = _opus(samples, plan.codec_kbps)
    if plan.clipping_percentile is not None:
        clipping = am.ClippingDistortion(plan.clipping_percentile, plan.clipping_percentile, p=1.0)
        with _seeded(plan.seed):
            samples = clipping(samples, SAMPLE_RATE)
    samples = samples * np.float32(10 ** (plan.gain_db / 20))
    peak = float(np.max(np.abs(samples))) if n else 0.0
    if peak > PEAK:  # a gain that would clip is lowered instead (clipping is its own step)
        samples = samples * np.float32(PEAK / peak)
    return samples.astype(np.float32)


def _mp3_quality(kbps: int | None) -> float:
    """LAME VBR quality (0 best .. 9.999 smallest) for a target bit rate in :data:`MP3_KBPS`."""
    low, high = MP3_KBPS
    return round(9.0 * (1.0 - ((kbps or high) - low) / (high - low)), 2)


def augment(audio: np.ndarray, rng: np.random.Generator, banks: Banks = Banks(),
            config: AugmentConfig = AugmentConfig()) -> np.ndarray:
    """Draw a plan from ``rng`` and apply it: on-the-fly augmentation for training."""
    return apply(draw(config, rng, banks), audio, banks)
