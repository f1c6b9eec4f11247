"""What the synthetic clips say: carrier sentences, fillers, ordinary speech and near misses of the phrase.

A clip's words are a carrier *frame* (a sentence with ``{p}`` where the *middle* goes), an optional
opener and closer around the frame, and the middle itself: the phrase (positives), a near miss such
as «не слышно» (hard negatives) or ordinary speech. The middle may be said twice, fast or slow, with
a hesitation («ээ», «ну») next to it. Frames carry ids (``f000``…): the test split is voiced from
frames the train split never uses (:func:`frames_for`), so test F1 measures unseen sentences.
:func:`plan_text` draws one clip's words; :mod:`heardet.synth.generate` voices them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

POSITIONS = ("start", "middle", "end", "alone")  # where the middle sits in its frame
POSITION_WEIGHTS = (0.3, 0.35, 0.25, 0.1)
OPENER_PROB = 0.35  # chance of an opener before a frame that has words before the middle
CLOSER_PROB = 0.3  # chance of a closer after a frame that has words after the middle
HESITATION_PROB = 0.15  # chance of a hesitation right before, and separately right after, the middle
TWICE_PROB = 0.1  # chance that the middle is said twice in a row
TEMPO_PROB = 0.3  # chance that the middle is said fast or slow (half each)
MIDDLE_TEMPO = {"fast": 1.3, "slow": 0.75}  # tempo factor of the middle against its carrier
TEST_FRAME_EVERY = 5  # every 5th frame (f004, f009, …) is voiced in the test split only

# Sentence frames: call-centre, everyday and conversational phrasing around the middle.
FRAMES = (
    "алло, я вас {p}, перезвоните", "{p}, что вы сказали", "алло, алло, {p}", "{p}",
    "извините, {p}, повторите пожалуйста", "говорите громче, {p}", "{p}, у меня плохая связь",
    "простите, я {p} вас", "что? {p}, связь пропадает", "{p}, перезвоните мне позже",
    "алло, {p} ничего", "я вас совсем {p}", "{p}, напишите мне сообщение", "подождите, {p}, тут шумно",
    "опять {p}, что за связь", "девушка, {p}, говорите в трубку", "{p}, вы пропадаете",
    "мама, {p}, я в метро", "ну вот, опять {p}", "{p}, алло", "я в лифте и {p}",
    "повторите номер, {p}", "так, {p}, говорите медленнее", "к сожалению, {p}, перезвоню",
    "{p} вас, отойдите от дороги", "добрый день, {p}", "{p}, какой у вас адрес", "сергей, {p}",
    "оператор, {p}", "{p}, переключите меня на специалиста", "я по поводу заказа, {p}",
    "скажите ещё раз, {p}", "{p}, у вас микрофон выключен", "вы меня слышите? а я {p}",
    "{p}, наберите меня с другого номера", "связь ужасная, {p}", "алло, здравствуйте, {p}",
    "{p}, вас очень тихо", "вот сейчас {p}", "номер договора? {p}", "{p}, какая сумма",
    "что-то {p}, давайте в чате", "{p}, повторите фамилию", "мужчина, {p}",
    "я на улице, {p}", "{p}, я за рулём", "честно говоря, {p}", "{p}, можно погромче",
    "ваш голос прерывается, {p}", "{p}, сейчас выйду на балкон", "секундочку, {p}",
    "кажется, {p}", "{p}, это служба доставки?", "я звоню из банка? {p}",
    "{p}, продиктуйте код ещё раз", "ой, {p}", "{p}, ветер сильный", "понимаете, {p}",
    "{p}, у меня наушники сели", "простите, пожалуйста, {p}", "{p} вообще",
    "с утра {p}", "{p}, давайте позже созвонимся", "ирина, {p}", "{p}, тут поезд едет",
    "по телефону {p}", "{p}, связь через раз", "алло, это поддержка? {p}", "{p}, вы там?",
    "так, стоп, {p}",
    "алло, говорите, {p}, что-то с линией", "девушка, я {p} вас, перезвоните", "слушайте, {p}, повторите адрес",
    "мужчина, {p}, что вы сказали", "простите, я {p}, тут ремонт", "ой, {p}, подождите секунду",
    "так, опять {p}, давайте сначала", "извините, {p} ни слова", "я в метро, {p}, выйду и перезвоню",
    "вы пропадаете, {p}, алло", "здравствуйте, {p}, говорите ближе к трубке", "ну вот, {p} опять",
    "секунду, {p}, сейчас отойду", "я же говорю, {p}, связь плохая", "ирина, я {p}, повторите цифры",
    "алло, {p}, вы меня слышите", "так, {p}, напишите в мессенджер", "оператор, {p}, громче пожалуйста",
    "а? {p}, ещё раз", "сергей, {p}, у тебя шумно", "да, да, {p}, давайте позже",
    "повторите, {p}, какой номер", "честно, {p}, что вы говорите", "у меня тут дети, {p}, повторите",
    "слушаю вас, {p}, алло",
)
OPENERS = ("алло", "да", "здравствуйте", "добрый день", "слушайте", "так", "извините", "ну", "короче",
           "девушка", "ага")
CLOSERS = ("перезвоните", "повторите пожалуйста", "говорите громче", "спасибо", "ладно", "вот", "пока",
           "в общем", "понимаете", "да")
HESITATIONS = ("ээ", "ну", "эм", "вот", "это", "как бы")
ORDINARY = (
    "не знаю", "всё хорошо", "подождите минуту", "я на работе", "сейчас перезвоню", "спасибо большое",
    "до свидания", "всё понятно", "я в машине", "давайте завтра", "всё в порядке", "понял вас",
    "минуточку", "очень приятно", "не надо", "не могу", "не сейчас", "я занят", "хорошо", "конечно",
    "договорились", "я скоро буду", "отлично", "не волнуйтесь", "как дела", "добрый вечер", "я дома",
    "вот это да", "не помню", "уже иду", "где вы", "позвоните в понедельник", "слышу вас хорошо",
    "записываю", "одну секунду", "номер заказа", "не против", "всё верно", "не поняла", "жду ответа",
)
# Every one-sound edit of the phrase that is a real word or phrase, plus other forms of «слышать».
DEFAULT_HARD_NEGATIVES = {"не слышу": (
    "не слышно", "не слышал", "не слышала", "не слышали", "не слышит", "не слышим", "не слышишь",
    "не слышат", "не слышны", "слышу", "я слышу", "хорошо слышу", "всё слышу", "слышно", "не спешу",
    "не слушаю", "не слушай", "не вижу", "не пишу", "не дышу", "не решу", "не скажу", "не услышу",
    "не услышал", "не услышит", "не слыхал", "не слышать", "не спишу", "не ношу", "не смешу", "не страшу",
    "не слышен", "неслышно", "не слушать", "не спросишь",
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


def frame_id(index: int) -> str:
    return f"f{index:03d}"


def frames_for(split: str) -> list[int]:
    """Indices of the frames a split is voiced from: disjoint between train and test."""
    held_out = {i for i in range(len(FRAMES)) if i % TEST_FRAME_EVERY == TEST_FRAME_EVERY - 1}
    return sorted(held_out if split == "test" else set(range(len(FRAMES))) - held_out)


def _split_frame(frame: str) -> tuple[str, str, str]:
    """(position, prefix, suffix) of a frame."""
    prefix, suffix = (part.strip(" ,") for part in frame.split("{p}"))
    return ("alone", "end", "start", "middle")[bool(prefix) + 2 * bool(suffix)], prefix, suffix


@dataclass(frozen=True)
class Segment:
    """One stretch of speech, voiced on its own: ``role`` is carrier, hesitation or middle."""

    role: str
    text: str


@dataclass(frozen=True)
class TextPlan:
    """The words of one clip, as the segments they are voiced in, and all of it as ``text``."""

    kind: str  # positive | hard_negative | negative
    middle: str
    frame: str  # frame id, e.g. "f012"
    position: str  # one of POSITIONS
    segments: tuple[Segment, ...]
    tempo: str  # "normal", "fast" or "slow": how the middle is said
    text: str

    @property
    def repeats(self) -> int:
        return sum(s.role == "middle" for s in self.segments)


def plan_text(phrase: str, near: list[str], positive_fraction: float, hard_negative_fraction: float, u: float,
              split: str, rng: np.random.Generator) -> TextPlan:
    """Draw the words of one clip of ``split``.

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
    allowed = frames_for(split)
    said = 2 if rng.random() < TWICE_PROB else 1
    tempo = ("fast", "slow")[int(rng.integers(2))] if rng.random() < TEMPO_PROB else "normal"
    for _ in range(50):  # a carrier must not add an occurrence of the phrase
        position = POSITIONS[int(rng.choice(len(POSITIONS), p=POSITION_WEIGHTS))]
        choices = [i for i in allowed if _split_frame(FRAMES[i])[0] == position] or allowed
        index = pick(rng, choices)
        position, prefix, suffix = _split_frame(FRAMES[index])
        if prefix and rng.random() < OPENER_PROB:
            prefix = f"{pick(rng, OPENERS)}, {prefix}"
        if suffix and rng.random() < CLOSER_PROB:
            suffix = f"{suffix}, {pick(rng, CLOSERS)}"
        before = pick(rng, HESITATIONS) if rng.random() < HESITATION_PROB else ""
        after = pick(rng, HESITATIONS) if rng.random() < HESITATION_PROB else ""
        parts = [("carrier", prefix), ("hesitation", before)] + [("middle", middle)] * said
        parts += [("hesitation", after), ("carrier", suffix)]
        segments = tuple(Segment(role, text) for role, text in parts if text)
        text = ", ".join(s.text for s in segments)
        if count(text, phrase) == said * int(kind == "positive"):
            break
    else:
        index, position, segments = allowed[0], "alone", tuple(Segment("middle", middle) for _ in range(said))
        text = ", ".join(s.text for s in segments)
    return TextPlan(kind, middle, frame_id(index), position, segments, tempo, text)
