"""Approach 1's decision: does the transcript contain the phrase? (``'не слыш' in text``)."""

from __future__ import annotations

import re
from difflib import SequenceMatcher

DEFAULT_PHRASE = "не слышу"
DEFAULT_RULE = "не слыш"  # the substring rule of the original recipe

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
