"""What the synthetic clips say: Russian carriers, fillers, ordinary speech and near misses of the phrase.

A clip's text is a carrier template with the *middle* in place of ``{p}``: the phrase (positives), a
near miss such as «не слышно» (hard negatives) or ordinary speech. :func:`plan_text` draws one clip's
words; :mod:`heardet.synth.generate` voices them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

POSITIONS = ("start", "middle", "end", "alone")  # where the middle sits in its carrier
POSITION_WEIGHTS = (0.3, 0.35, 0.25, 0.1)
FILLER_PROB = 0.3  # chance of a filler word before the prefix, and after the suffix

TEMPLATES = (
    "алло, я вас {p}, перезвоните", "{p}, что вы сказали", "алло, алло, {p}", "{p}",
    "извините, {p}, повторите пожалуйста", "говорите громче, {p}", "{p}, у меня плохая связь",
    "простите, я {p} вас", "что? {p}, связь пропадает", "{p}, перезвоните мне позже",
    "алло, {p} ничего", "я вас совсем {p}", "{p}, напишите мне сообщение", "подождите, {p}, тут шумно",
    "опять {p}, что за связь", "девушка, {p}, говорите в трубку", "{p}, вы пропадаете",
    "мама, {p}, я в метро", "ну вот, опять {p}", "{p}, алло", "я в лифте и {p}",
    "повторите номер, {p}", "так, {p}, говорите медленнее", "к сожалению, {p}, перезвоню",
    "{p} вас, отойдите от дороги", "добрый день, {p}", "{p}, какой у вас адрес", "сергей, {p}",
)
FILLERS_BEFORE = ("ну", "алло", "так", "эээ", "слушай", "короче", "вот", "да")
FILLERS_AFTER = ("ладно", "вот", "пока", "ага", "да", "в общем", "спасибо")
ORDINARY = (
    "не знаю", "всё хорошо", "подождите минуту", "я на работе", "сейчас перезвоню", "спасибо большое",
    "до свидания", "всё понятно", "я в машине", "давайте завтра", "всё в порядке", "понял вас",
    "минуточку", "очень приятно", "не надо", "не могу", "не сейчас", "я занят", "хорошо", "конечно",
    "договорились", "я скоро буду", "отлично", "не волнуйтесь", "как дела", "добрый вечер", "я дома",
    "вот это да", "не помню", "уже иду", "где вы", "позвоните в понедельник",
)
DEFAULT_HARD_NEGATIVES = {"не слышу": (
    "не слышно", "не слышал", "не слышала", "не слышали", "не слышит", "не слышим", "не слышишь",
    "не слышат", "не слышны", "слышу", "я слышу", "хорошо слышу", "всё слышу", "слышно", "не спешу",
    "не слушаю", "не слушай", "не вижу", "не пишу", "не дышу", "не решу", "не скажу",
)}
ENDINGS = ("ал", "ала", "али", "ит", "им", "ат", "ишь", "но", "ны", "и", "а")  # for derived near misses


def words(text: str) -> list[str]:
    """Lower-case words (ё→е), punctuation and digits dropped."""
    return re.findall(r"[^\W\d_]+", text.lower().replace("ё", "е"))


def count(text: str, phrase: str) -> int:
    """How often the words of ``phrase`` occur, in order and adjacent, in ``text``."""
    t, p = words(text), words(phrase)
    return sum(t[i : i + len(p)] == p for i in range(len(t) - len(p) + 1)) if p else 0


def near_misses(phrase: str, extra: tuple[str, ...] = ()) -> list[str]:
    """Near-miss middles: curated for a known phrase, else each word alone and ending variants."""
    said = words(phrase)
    candidates = list(DEFAULT_HARD_NEGATIVES.get(" ".join(said), ()))
    if not candidates:
        candidates += said if len(said) > 1 else []
        for stem in (said[-1][:-1], said[-1][:-2]) if len(said[-1]) > 3 else ():
            candidates += [" ".join(said[:-1] + [stem + ending]) for ending in ENDINGS]
    candidates += list(extra)
    return list(dict.fromkeys(c.strip() for c in candidates if words(c) and not count(c, phrase)))


def pick(rng: np.random.Generator, items: tuple | list) -> Any:
    """One item, drawn uniformly."""
    return items[int(rng.integers(len(items)))]


def _split_template(template: str) -> tuple[str, str, str]:
    """(position, prefix, suffix) of a carrier template."""
    prefix, suffix = (part.strip(" ,?.!") for part in template.split("{p}"))
    return ("alone", "end", "start", "middle")[bool(prefix) + 2 * bool(suffix)], prefix, suffix


@dataclass(frozen=True)
class TextPlan:
    """The words of one clip: the ``middle`` said in a carrier (``prefix`` … ``suffix``), and all of it."""

    kind: str  # positive | hard_negative | negative
    middle: str
    position: str  # one of POSITIONS
    prefix: str
    suffix: str
    text: str


def plan_text(phrase: str, near: list[str], positive_fraction: float, hard_negative_fraction: float, u: float,
              rng: np.random.Generator) -> TextPlan:
    """Draw the words of one clip.

    ``u`` in [0, 1) picks the kind against the configured fractions; every other choice is drawn
    from ``rng``. A carrier that would add an occurrence of the phrase is redrawn (50 tries, then
    the middle is said alone).
    """
    pf = positive_fraction
    if u < pf:
        kind, middle = "positive", phrase
    elif (u - pf) / (1.0 - pf) < hard_negative_fraction and near:
        kind, middle = "hard_negative", pick(rng, near)
    else:
        kind, middle = "negative", pick(rng, ORDINARY)
    for _ in range(50):  # a carrier must not add an occurrence of the phrase
        position = POSITIONS[int(rng.choice(len(POSITIONS), p=POSITION_WEIGHTS))]
        template = pick(rng, [t for t in TEMPLATES if _split_template(t)[0] == position])
        _, prefix, suffix = _split_template(template)
        text = template.format(p=middle)
        if prefix and rng.random() < FILLER_PROB:
            filler = pick(rng, FILLERS_BEFORE)
            prefix, text = f"{filler}, {prefix}", f"{filler}, {text}"
        if suffix and rng.random() < FILLER_PROB:
            filler = pick(rng, FILLERS_AFTER)
            suffix, text = f"{suffix}, {filler}", f"{text}, {filler}"
        if count(text, phrase) == int(kind == "positive"):
            break
    else:
        position, prefix, suffix, text = "alone", "", "", middle
    return TextPlan(kind, middle, position, prefix, suffix, text)
