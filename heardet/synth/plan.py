"""Every random choice of one clip, drawn up front into a typed :class:`ClipPlan`.

Each clip's choices come from ``np.random.default_rng([seed, split_index, clip_index])``, so a
clip does not depend on how many others are made, nor on which worker makes it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from heardet.synth.config import SynthConfig
from heardet.synth.text import ORDINARY, TextPlan, pick, plan_text
from heardet.synth.voices import (
    ESPEAK_PITCH,
    ESPEAK_RATE_WPM,
    ESPEAK_VARIANTS,
    FESTIVAL_PITCH_CENTS,
    FESTIVAL_TEMPO,
    FESTIVAL_VOICE,
)

SPLITS = ("train", "test")
EDGE_SILENCE_S = (0.15, 0.7)  # silence before the first and after the last segment, seconds
PAUSE_S = (0.05, 0.35)  # pause between segments, seconds
REVERB_RT60_S = (0.15, 0.7)  # reverberation time, seconds
BABBLE_SPEAKERS = 3
NOISE_KINDS = ("white", "pink", "babble")


@dataclass(frozen=True)
class AugmentPlan:
    """What happens to the clean speech; ``None`` where that step is skipped."""

    noise: str | None  # one of NOISE_KINDS
    snr_db: float | None
    telephone: bool
    reverb: float | None  # RT60, seconds
    gain_db: float


@dataclass(frozen=True)
class BabbleSpeaker:
    """One background voice of babble noise (espeak-ng)."""

    voice: str
    rate: int  # words per minute
    text: str


@dataclass(frozen=True)
class ClipPlan:
    """One clip: its words, its voice, its timing and its augmentation.

    ``rate`` is words per minute for espeak-ng and a tempo factor for festival; ``pitch`` is
    espeak-ng pitch units (0..99) or a shift in cents for festival.
    """

    id: str
    split: str
    index: int
    seed: int
    words: TextPlan
    engine: str
    voice: str
    rate: float
    pitch: int
    edges_s: tuple[float, float]
    pauses_s: tuple[float, float]
    augment: AugmentPlan
    babble: tuple[BabbleSpeaker, ...] = ()

    @property
    def label(self) -> int:
        return int(self.words.kind == "positive")

    def rng(self, stream: int) -> np.random.Generator:
        """A generator of this clip's own, for choices made while rendering (``stream`` >= 1)."""
        return np.random.default_rng([self.seed, SPLITS.index(self.split), self.index, stream])


def plan_clip(config: SynthConfig, near: list[str], split: str, index: int) -> ClipPlan:
    """Every random choice of clip ``index`` of ``split``, drawn from its own generator in a fixed order."""
    split_index = SPLITS.index(split)
    phases = np.random.default_rng([config.seed, split_index]).random(2)
    rng = np.random.default_rng([config.seed, split_index, index])
    # Low-discrepancy sequences keep label and engine shares close to the fractions for any count.
    u = (phases[0] + index * 0.6180339887498949) % 1.0
    v = (phases[1] + index * 0.41421356237309515) % 1.0
    said = plan_text(config.phrase, near, config.positive_fraction, config.hard_negative_fraction, u, rng)
    if v < config.festival_fraction:
        engine, voice = "festival", FESTIVAL_VOICE
        rate = round(float(rng.uniform(*FESTIVAL_TEMPO)), 3)  # tempo factor
        pitch = int(rng.integers(FESTIVAL_PITCH_CENTS[0], FESTIVAL_PITCH_CENTS[1] + 1))  # cents
    else:
        engine, voice = "espeak-ng", f"ru+{pick(rng, ESPEAK_VARIANTS)}"
        rate = int(rng.integers(ESPEAK_RATE_WPM[0], ESPEAK_RATE_WPM[1] + 1))  # words per minute
        pitch = int(rng.integers(ESPEAK_PITCH[0], ESPEAK_PITCH[1] + 1))
    edges = tuple(round(float(rng.uniform(*EDGE_SILENCE_S)), 3) for _ in range(2))
    pauses = tuple(round(float(rng.uniform(*PAUSE_S)), 3) for _ in range(2))
    noise = pick(rng, NOISE_KINDS) if rng.random() < config.noise_prob else None
    babble = tuple(BabbleSpeaker(f"ru+{pick(rng, ESPEAK_VARIANTS)}", int(rng.integers(130, 190)),
                                 ", ".join(pick(rng, ORDINARY) for _ in range(4))) for _ in range(BABBLE_SPEAKERS))
    augment = AugmentPlan(
        noise=noise,
        snr_db=round(float(rng.uniform(*config.snr_db)), 2) if noise else None,
        telephone=bool(rng.random() < config.telephone_prob),
        reverb=round(float(rng.uniform(*REVERB_RT60_S)), 3) if rng.random() < config.reverb_prob else None,
        gain_db=round(float(rng.uniform(*config.gain_db)), 2),
    )
    return ClipPlan(id=f"{split}_{index + 1:04d}", split=split, index=index, seed=config.seed, words=said,
                    engine=engine, voice=voice, rate=rate, pitch=pitch, edges_s=edges, pauses_s=pauses,
                    augment=augment, babble=babble if noise == "babble" else ())
