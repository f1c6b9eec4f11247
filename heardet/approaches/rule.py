"""Approach 1: does the transcript contain the phrase? (`'не слыш' in text`), and its pyfunc."""

from __future__ import annotations

import re
from dataclasses import dataclass
from difflib import SequenceMatcher

from heardet.approaches.transcribed import TranscribingModel
from heardet.config import is_str, is_text, setting, validate

DEFAULT_PHRASE = "не слышу"
DEFAULT_RULE = "не слыш"  # the substring rule of the original recipe



@dataclass(frozen=True)
class RuleConfig:
    """Approach 1's decision: what the transcript must contain."""

    rule: str = setting(DEFAULT_RULE, "a non-empty substring", is_text, "A clip is 1 when its transcript has it.")
    phrase: str = setting(DEFAULT_PHRASE, "a string (empty: no soft score)", is_str,
                          "Near misses of it score higher.")

    def __post_init__(self) -> None:
        validate(self)


_NON_WORD = re.compile(r"[^\w\s]+", re.UNICODE)
_SPACES = re.compile(r"\s+")


def normalize(text: str) -> str:
    """Lower case, ё→е, punctuation removed, whitespace collapsed."""
    text = text.lower().replace("ё", "е")
    return _SPACES.sub(" ", _NON_WORD.sub(" ", text)).strip()


def rule_label(text: str, substring: str = DEFAULT_RULE) -> int:
    """1 when the normalised ``substring`` occurs in the normalised ``text``."""
    return int(normalize(substring) in normalize(text))


def similarity(text: str, phrase: str = DEFAULT_PHRASE) -> float:
    """Best character-level similarity (0..1) between ``phrase`` and any span of ``text``
    with as many words as the phrase."""
    words, target = normalize(text).split(), normalize(phrase)
    n = max(1, len(target.split()))
    if not words:
        return 0.0
    spans = [" ".join(words[i : i + n]) for i in range(max(1, len(words) - n + 1))]
    return max(SequenceMatcher(None, span, target).ratio() for span in spans)


def rule_score(text: str, substring: str = DEFAULT_RULE, phrase: str = DEFAULT_PHRASE) -> float:
    """A soft score consistent with :func:`rule_label` at a 0.5 threshold: 1.0 when the rule
    fires, otherwise half the best similarity to ``phrase`` (so near misses rank higher)."""
    if rule_label(text, substring):
        return 1.0
    return round(0.5 * similarity(text, phrase), 4) if phrase else 0.0


class RuleModel(TranscribingModel):
    """Approach 1's pyfunc: Whisper transcript + substring rule."""

    def __init__(self, asr_model: str, backend: str, options: dict, rule: str, phrase: str):
        super().__init__(asr_model, backend, options)
        self.rule, self.phrase = rule, phrase

    def decide(self, texts: list[str]) -> list[tuple[int, float]]:
        return [(rule_label(t, self.rule), rule_score(t, self.rule, self.phrase)) for t in texts]
