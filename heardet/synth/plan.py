"""Every random choice of one clip, drawn up front into a typed :class:`ClipPlan`.

Each clip's choices come from ``np.random.default_rng([seed, split_index, clip_index])``, so a
clip does not depend on how many others are made, nor on which worker makes it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from heardet.augment import AugmentPlan, Banks, draw
from heardet.synth.config import SynthConfig
from heardet.synth.text import MIDDLE_TEMPO, TextPlan, plan_text
from heardet.synth.voices import Voice, draw_voice

SPLITS = ("train", "test")
EDGE_SILENCE_S = (0.15, 0.7)  # silence before the first and after the last segment, seconds
PAUSE_S = (0.05, 0.35)  # pause between segments, seconds


@dataclass(frozen=True)
class ClipPlan:
    """One clip: its words, its voice, its timing and its augmentation."""

    id: str
    split: str
    index: int
    seed: int
    words: TextPlan
    voice: Voice
    edges_s: tuple[float, float]
    pauses_s: tuple[float, ...]  # one per gap between segments
    augment: AugmentPlan

    @property
    def label(self) -> int:
        return int(self.words.kind == "positive")

    @property
    def middle_tempo(self) -> float:
        return MIDDLE_TEMPO.get(self.words.tempo, 1.0)


def plan_clip(config: SynthConfig, near: list[str], split: str, index: int, banks: Banks) -> ClipPlan:
    """Every random choice of clip ``index`` of ``split``, drawn from its own generator in a fixed order."""
    split_index = SPLITS.index(split)
    phases = np.random.default_rng([config.seed, split_index]).random(2)
    rng = np.random.default_rng([config.seed, split_index, index])
    # Low-discrepancy sequences keep label and engine shares close to the fractions for any count.
    u = (phases[0] + index * 0.6180339887498949) % 1.0
    v = (phases[1] + index * 0.41421356237309515) % 1.0
    said = plan_text(config.phrase, near, config.positive_fraction, config.hard_negative_fraction, u, split, rng)
    engine = ("festival" if v < config.festival_fraction else
              "rhvoice" if v < config.festival_fraction + config.rhvoice_fraction else "espeak-ng")
    speaker = draw_voice(engine, split, rng)
    edges = tuple(round(float(rng.uniform(*EDGE_SILENCE_S)), 3) for _ in range(2))
    pauses = tuple(round(float(rng.uniform(*PAUSE_S)), 3) for _ in range(len(said.segments) - 1))
    augment = draw(config.augment_of(split), np.random.default_rng([config.seed, split_index, index, 1]), banks)
    return ClipPlan(id=f"{split}_{index + 1:04d}", split=split, index=index, seed=config.seed, words=said,
                    voice=speaker, edges_s=edges, pauses_s=pauses, augment=augment)
