"""What :func:`heardet.synth.synthesize` makes: the settings (every key with its unit) and the report."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from heardet.augment import AugmentConfig
from heardet.config import FRACTION, is_int, is_number, setting, setting_of, validate
from heardet.synth.text import count, words

GENERATOR_VERSION = 3  # bump when a change to heardet.synth changes the clips a config makes
# Settings added since version 3 whose defaults make the clips of before: at their default they stay out of
# the hash, so datasets made before them keep theirs.
ADDED_SINCE_VERSION_3 = ("rhvoice_fraction", "train_speech_prob")


def _is_phrase(value: Any) -> bool:
    return isinstance(value, str) and bool(words(value))


@dataclass(frozen=True)
class SynthConfig:
    """What to generate; validated on creation (``ValueError`` names the field, value and allowed range).

    The augmentation settings are :class:`heardet.augment.AugmentConfig`'s (``snr_db``/``gain_db``
    are (low, high) ranges drawn uniformly per clip); ``hard_negatives`` extends the near misses
    derived for ``phrase``; ``workers`` never changes the clips.
    """

    phrase: str = setting("не слышу", "a string with at least one word", _is_phrase, "Target phrase.")
    n_train: int = setting(300, "an integer >= 0", is_int(0), "Training clips.")
    n_test: int = setting(200, "an integer >= 0", is_int(0), "Test clips.")
    positive_fraction: float = setting(0.5, *FRACTION, "Share of clips that say the phrase.")
    hard_negative_fraction: float = setting(0.5, *FRACTION, "Share of negatives that are near misses.")
    festival_fraction: float = setting(0.5, *FRACTION, "Share of clips voiced by festival (rest espeak-ng).")
    rhvoice_fraction: float = setting(0.0, *FRACTION, "Share of clips voiced by RHVoice (taken from espeak-ng's "
                                                      "share; festival_fraction + rhvoice_fraction <= 1).")
    noise_prob: float = setting_of(AugmentConfig, "noise_prob")
    snr_db: tuple[float, float] = setting_of(AugmentConfig, "snr_db")
    speech_prob: float = setting_of(AugmentConfig, "speech_prob")
    train_speech_prob: float = setting(-1.0, "-1 (as speech_prob) or a number in [0, 1]",
                                       lambda v: is_number(0, 1)(v) or (is_number()(v) and v == -1),
                                       "Probability per train clip of background speech (-1: speech_prob); "
                                       "the test split always uses speech_prob.")
    reverb_prob: float = setting_of(AugmentConfig, "reverb_prob")
    telephone_prob: float = setting_of(AugmentConfig, "telephone_prob")
    codec_prob: float = setting_of(AugmentConfig, "codec_prob")
    clipping_prob: float = setting_of(AugmentConfig, "clipping_prob")
    gain_db: tuple[float, float] = setting_of(AugmentConfig, "gain_db")
    hard_negatives: tuple[str, ...] = setting((), "a tuple of phrases that do not contain the phrase",
                                              lambda v: isinstance(v, (tuple, list)) and all(map(_is_phrase, v)),
                                              "Extra near-miss phrases.")
    seed: int = setting(0, "an integer >= 0", is_int(0), "Random seed (same seed, same data).")
    workers: int = setting(2, "an integer >= 1", is_int(1), "Parallel processes (never changes the clips).")

    def __post_init__(self) -> None:
        shares = (self.festival_fraction, self.rhvoice_fraction)
        numeric = all(isinstance(v, (int, float)) for v in shares)  # else the fields' own checks name them
        validate(self, {
            "n_train": (self.n_train + self.n_test > 0, "> 0 when n_test is 0 (nothing to generate)"),
            "rhvoice_fraction": (not numeric or sum(shares) <= 1.0,
                                 f"<= 1 - festival_fraction ({f'{1.0 - shares[0]:g}' if numeric else '?'}): "
                                 f"the engines' shares add up to at most 1"),
            "hard_negatives": (not any(count(h, self.phrase) for h in self.hard_negatives),
                               f"phrases that do not contain the phrase {self.phrase!r}"),
        })
        for name in ("snr_db", "gain_db"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        object.__setattr__(self, "hard_negatives", tuple(self.hard_negatives))

    @property
    def augment(self) -> AugmentConfig:
        """The augmentation settings, as the chain takes them (the test split's)."""
        return AugmentConfig(**{f.name: getattr(self, f.name) for f in fields(AugmentConfig)})

    def augment_of(self, split: str) -> AugmentConfig:
        """The augmentation settings of ``split``: the train split's background speech may differ."""
        if split == "train" and self.train_speech_prob != -1:
            return replace(self.augment, speech_prob=self.train_speech_prob)
        return self.augment

    def clip_hash(self) -> str:
        """Hash of the settings that shape clips (not the counts, not ``workers``)."""
        defaults = {f.name: f.default for f in fields(self)}
        shaping = {k: v for k, v in asdict(self).items() if k not in ("n_train", "n_test", "workers")
                   and not (k in ADDED_SINCE_VERSION_3 and v == defaults[k])}
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
