"""What :func:`heardet.synth.synthesize` makes: the settings (every key with its unit) and the report."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from heardet.config import is_int, is_number, setting, validate
from heardet.synth.text import count, words

GENERATOR_VERSION = 1  # bump when a change to heardet.synth changes the clips a config makes


def _is_phrase(value: Any) -> bool:
    return isinstance(value, str) and bool(words(value))


def _is_range(low: float, high: float):
    number = is_number()
    return lambda v: (isinstance(v, (tuple, list)) and len(v) == 2 and all(map(number, v))
                      and low <= v[0] <= v[1] <= high)


FRACTION = ("a number in [0, 1]", is_number(0, 1))


@dataclass(frozen=True)
class SynthConfig:
    """What to generate; validated on creation (``ValueError`` names the field, value and allowed range).

    ``snr_db``/``gain_db`` are (low, high) ranges drawn uniformly per clip; ``hard_negatives``
    extends the near misses derived for ``phrase``; ``workers`` never changes the clips.
    """

    phrase: str = setting("не слышу", "a string with at least one word", _is_phrase, "Target phrase.")
    n_train: int = setting(300, "an integer >= 0", is_int(0), "Training clips.")
    n_test: int = setting(200, "an integer >= 0", is_int(0), "Test clips.")
    positive_fraction: float = setting(0.5, *FRACTION, "Share of clips that say the phrase.")
    hard_negative_fraction: float = setting(0.5, *FRACTION, "Share of negatives that are near misses.")
    festival_fraction: float = setting(0.5, *FRACTION, "Share of clips voiced by festival (rest espeak-ng).")
    snr_db: tuple[float, float] = setting((5.0, 30.0), "a (low, high) pair in dB with -20 <= low <= high <= 80",
                                          _is_range(-20.0, 80.0), "Additive noise SNR range, dB.")
    noise_prob: float = setting(0.6, *FRACTION, "Probability per clip of additive noise (white, pink, babble).")
    telephone_prob: float = setting(0.3, *FRACTION, "Probability per clip of an 8 kHz, 300-3400 Hz round trip.")
    reverb_prob: float = setting(0.3, *FRACTION, "Probability per clip of reverberation.")
    gain_db: tuple[float, float] = setting((-12.0, 3.0), "a (low, high) pair in dB with -60 <= low <= high <= 20",
                                           _is_range(-60.0, 20.0), "Gain range, dB, relative to speech at -9 dBFS.")
    hard_negatives: tuple[str, ...] = setting((), "a tuple of phrases that do not contain the phrase",
                                              lambda v: isinstance(v, (tuple, list)) and all(map(_is_phrase, v)),
                                              "Extra near-miss phrases.")
    seed: int = setting(0, "an integer >= 0", is_int(0), "Random seed (same seed, same data).")
    workers: int = setting(2, "an integer >= 1", is_int(1), "Parallel processes (never changes the clips).")

    def __post_init__(self) -> None:
        validate(self, {
            "n_train": (self.n_train + self.n_test > 0, "> 0 when n_test is 0 (nothing to generate)"),
            "hard_negatives": (not any(count(h, self.phrase) for h in self.hard_negatives),
                               f"phrases that do not contain the phrase {self.phrase!r}"),
        })
        for name in ("snr_db", "gain_db"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        object.__setattr__(self, "hard_negatives", tuple(self.hard_negatives))

    def clip_hash(self) -> str:
        """Hash of the settings that shape clips (not the counts, not ``workers``)."""
        shaping = {k: v for k, v in asdict(self).items() if k not in ("n_train", "n_test", "workers")}
        text = json.dumps({"generator_version": GENERATOR_VERSION, **shaping}, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class SynthReport:
    """What :func:`heardet.synth.synthesize` did; counts are clips, ``seconds`` is wall time."""

    out_dir: Path
    n_train: int
    n_test: int
    n_generated: int
    n_skipped: int
    seconds: float
    positives_train: int
    positives_test: int
