"""The speakers: espeak-ng, festival and RHVoice (Russian), made into many voices by pitch, formant and tempo changes.

A :class:`Voice` is an engine's base voice plus a *formant factor*: the whole utterance is resampled
by that factor (a vocal-tract-length and speed perturbation: formants, pitch and tempo move
together), then, for festival, time-stretched back and pitch-shifted with pedalboard (Rubber Band,
formants preserved). espeak-ng and RHVoice vary rate and pitch natively. A voice's id names its engine, base
voice and formant bin; the test split uses ids the train split never uses (:func:`draw_voice`).

festival is deterministic: a text on its own always gets the same units, so a phrase voiced alone would
be one recording in every clip, and a model trained on festival alone would learn that one recording.
:func:`say_in_context` therefore cuts a segment out of festival's rendering of the clip's whole text,
at festival's own word times: the units and timing around the phrase change with its sentence.

RHVoice (Debian's ``rhvoice`` and ``rhvoice-russian``, in Debian's non-free section) is a statistical
parametric synthesiser with 13 Russian speakers of its own, men and women: a third kind of voice, unlike
espeak-ng's formant synthesis and festival's unit selection. Its speakers are split between train and test
like espeak-ng's variants.
"""

from __future__ import annotations

import hashlib
import io
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from heardet.audio import SAMPLE_RATE, resample
from heardet.synth.text import words

FESTIVAL_VOICE = "voice_msu_ru_nsh_clunits"
FESTIVAL_BASE = "msu_ru_nsh"
FESTIVAL_VOICE_DIRS = ("/usr/share/festival/voices/russian/msu_ru_nsh_clunits",)
ESPEAK_VARIANTS = tuple(
    "m1 m2 m3 m4 m5 m6 m7 m8 f1 f2 f3 f4 f5 klatt klatt2 klatt3 klatt4 Alex Andy Annie aunty belinda boris david "
    "Denis Diogo ed edward Gene grandma grandpa Hugo iven john Lee linda Marco max Michael norbert paul pedro "
    "quincy rob robert sandro shelby steph travis victor zac anika".split())
TEST_VARIANT_EVERY = 4  # every 4th espeak-ng variant (m4, m8, f4, …) speaks in the test split only
ESPEAK_RATE_WPM = (110, 200)
ESPEAK_PITCH = (20, 80)  # espeak-ng pitch units, 0..99
FORMANT_BINS = ((0.88, 0.92), (0.92, 0.96), (0.96, 1.0), (1.0, 1.04), (1.04, 1.08), (1.08, 1.12))
FESTIVAL_TEST_BINS = (1, 4)  # festival has one base speaker: these formant bins speak in the test split only
FESTIVAL_TEMPO = (0.85, 1.2)  # tempo factor of festival speech
FESTIVAL_SEMITONES = (-4, 4)  # pitch shift of festival speech, whole semitones (Rubber Band is 6x slower
#                               on fractional shifts; the formant factor makes the pitch continuous anyway)
RHVOICE_VOICES = tuple(
    "aleksandr anna arina artemiy elena evgeniy-rus irina mikhail pavel tatiana victoria vitaliy yuriy".split())
# Two men and two women speak in the test split only (aleksandr-hq, the same speaker as aleksandr, is not used).
RHVOICE_TEST_VOICES = ("arina", "mikhail", "tatiana", "yuriy")
RHVOICE_DIRS = ("/usr/share/RHVoice/voices", "/usr/local/share/RHVoice/voices")
RHVOICE_RATE = (75, 135)  # RHVoice speech rate, percent of the speaker's own
RHVOICE_PITCH = (80, 125)  # RHVoice pitch, percent of the speaker's own
TRIM_DB = 35.0  # a 10 ms frame this far below the loudest frame counts as silence


@dataclass(frozen=True)
class Voice:
    """One speaker. ``rate``: words per minute (espeak-ng), tempo factor (festival) or percent (RHVoice);
    ``pitch``: espeak-ng pitch units (0..99), festival semitones or percent (RHVoice); ``formant``: the
    resampling factor (> 1 is a shorter tract)."""

    engine: str  # espeak-ng | festival | rhvoice
    base: str  # espeak-ng voice "ru+m3", FESTIVAL_BASE, or an RHVoice speaker "irina"
    formant: float
    rate: float
    pitch: int

    @property
    def formant_bin(self) -> int:
        return next((k for k, (_, high) in enumerate(FORMANT_BINS) if self.formant < high), len(FORMANT_BINS) - 1)

    @property
    def id(self) -> str:
        """Engine, base voice and formant bin; festival (one base speaker) also its pitch shift."""
        pitch = f"p{self.pitch:+d}" if self.engine == "festival" else ""
        return f"{self.engine}/{self.base}/f{self.formant_bin}{pitch}"


def espeak_variants(split: str) -> list[str]:
    """The espeak-ng variants that speak in ``split``: train and test never share one."""
    test = split == "test"
    return [v for k, v in enumerate(ESPEAK_VARIANTS) if (k % TEST_VARIANT_EVERY == TEST_VARIANT_EVERY - 1) == test]


def festival_bins(split: str) -> list[int]:
    return [k for k in range(len(FORMANT_BINS)) if (k in FESTIVAL_TEST_BINS) == (split == "test")]


def rhvoice_speakers(split: str) -> list[str]:
    """The RHVoice speakers of ``split``: train and test never share one."""
    return [v for v in RHVOICE_VOICES if (v in RHVOICE_TEST_VOICES) == (split == "test")]


def draw_voice(engine: str, split: str, rng: np.random.Generator) -> Voice:
    """A new speaker of ``engine`` for a clip of ``split``, drawn from the voices that split may use."""
    if engine == "rhvoice":
        speakers = rhvoice_speakers(split)
        base = speakers[int(rng.integers(len(speakers)))]
        # 13 real speakers vary already: a narrower formant range (0.92-1.08) than espeak-ng's
        formant = float(rng.uniform(FORMANT_BINS[1][0], FORMANT_BINS[-2][1]))
        return Voice("rhvoice", base, round(formant, 4), int(rng.integers(RHVOICE_RATE[0], RHVOICE_RATE[1] + 1)),
                     int(rng.integers(RHVOICE_PITCH[0], RHVOICE_PITCH[1] + 1)))
    if engine == "festival":
        bins = festival_bins(split)
        low, high = FORMANT_BINS[bins[int(rng.integers(len(bins)))]]
        formant = low + (high - low) * float(rng.uniform(0.02, 0.98))  # clear of the edges: rounding keeps the bin
        return Voice("festival", FESTIVAL_BASE, round(formant, 4), round(float(rng.uniform(*FESTIVAL_TEMPO)), 3),
                     int(rng.integers(FESTIVAL_SEMITONES[0], FESTIVAL_SEMITONES[1] + 1)))
    variants = espeak_variants(split)
    base = f"ru+{variants[int(rng.integers(len(variants)))]}"
    formant = float(rng.uniform(FORMANT_BINS[0][0], FORMANT_BINS[-1][1]))
    return Voice("espeak-ng", base, round(formant, 4), int(rng.integers(ESPEAK_RATE_WPM[0], ESPEAK_RATE_WPM[1] + 1)),
                 int(rng.integers(ESPEAK_PITCH[0], ESPEAK_PITCH[1] + 1)))


def rhvoice_installed() -> list[str]:
    """The RHVoice speakers of :data:`RHVOICE_VOICES` installed here (none without ``RHVoice-test``)."""
    if shutil.which("RHVoice-test") is None:
        return []
    return [v for v in RHVOICE_VOICES if any((Path(d) / v).is_dir() for d in RHVOICE_DIRS)]


def check_tts(festival: bool = True, rhvoice: bool = False) -> None:
    """Check that espeak-ng (Russian), if ``festival`` festival with festvox-ru, and if ``rhvoice`` RHVoice
    with every speaker of :data:`RHVOICE_VOICES`, are installed.

    Raises:
        RuntimeError: naming what is missing and the ``apt-get install`` command that adds it.
    """
    missing = []
    if shutil.which("espeak-ng") is None:
        missing.append("espeak-ng")
    elif not re.search(r"\bru\b", subprocess.run(["espeak-ng", "--voices=ru"], capture_output=True,
                                                  text=True, check=False).stdout):
        missing.append("espeak-ng-data (Russian voice 'ru')")
    if festival and shutil.which("festival") is None:
        missing += ["festival", "festvox-ru"]
    elif festival and not any(Path(d).is_dir() for d in FESTIVAL_VOICE_DIRS):
        missing.append(f"festvox-ru (festival voice {FESTIVAL_VOICE})")
    if rhvoice and shutil.which("RHVoice-test") is None:
        missing += ["rhvoice", "rhvoice-russian"]
    elif rhvoice and len(installed := rhvoice_installed()) < len(RHVOICE_VOICES):
        absent = [v for v in RHVOICE_VOICES if v not in installed]
        missing.append(f"rhvoice-russian (RHVoice speakers {', '.join(absent)} under {' or '.join(RHVOICE_DIRS)})")
    if missing:
        packages = " ".join(sorted({m.split()[0] for m in missing}))
        where = (" (rhvoice is in Debian's non-free section: add the component 'non-free' to the system's apt "
                 "sources first)" if "rhvoice-russian" in packages else "")
        raise RuntimeError(f"TTS tools missing: {', '.join(missing)}. Install them with: "
                           f"sudo apt-get install -y {packages}{where}")


def run_tool(cmd: list[str], stdin: bytes | None = None, timeout: float = 120) -> bytes:
    """Run a TTS tool; its failure becomes a RuntimeError carrying its stderr."""
    try:
        done = subprocess.run(cmd, input=stdin, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{cmd[0]} timed out after {timeout:.0f} s: {' '.join(cmd)}") from None
    if done.returncode != 0:
        stderr = done.stderr.decode("utf-8", "replace").strip()
        raise RuntimeError(f"{cmd[0]} failed (exit {done.returncode}): {stderr or 'no stderr'}")
    return done.stdout


def read_wav(data: bytes | Path, what: str) -> np.ndarray:
    """A WAV (bytes or file) as mono float32 at ``SAMPLE_RATE``."""
    import soundfile as sf

    try:
        audio, sr = sf.read(io.BytesIO(data) if isinstance(data, bytes) else data, dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as exc:
        raise RuntimeError(f"{what} gave no usable audio: {exc}") from None
    return resample(audio.mean(axis=1), int(sr), SAMPLE_RATE)


def espeak(text: str, voice: str, rate: int, pitch: int = 50) -> np.ndarray:
    """``text`` said by espeak-ng ``voice`` at ``rate`` words per minute and ``pitch`` (0..99)."""
    cmd = ["espeak-ng", "-v", voice, "-s", str(rate), "-p", str(pitch), "--stdout"]
    return read_wav(run_tool(cmd, stdin=text.encode("utf-8")), f"espeak-ng -v {voice}")  # stdin: no option parsing


def rhvoice(text: str, voice: str, rate: int, pitch: int = 100) -> np.ndarray:
    """``text`` said by RHVoice speaker ``voice`` at ``rate`` and ``pitch`` percent of the speaker's own.

    RHVoice-test falls back to another speaker without an error when ``voice`` is not installed, so the
    speaker is checked first."""
    if not any((Path(d) / voice).is_dir() for d in RHVOICE_DIRS):
        raise RuntimeError(f"RHVoice speaker {voice!r} is not installed (looked in {', '.join(RHVOICE_DIRS)}); "
                           f"install Debian's rhvoice-russian")
    cmd = ["RHVoice-test", "-p", voice, "-r", str(rate), "-t", str(pitch), "-o", "-"]
    return read_wav(run_tool(cmd, stdin=text.encode("utf-8")), f"RHVoice-test -p {voice}")


def festival_path(cache: Path, text: str) -> Path:
    """Where festival's rendering of ``text`` is kept (festival is deterministic: one rendering per text);
    its word times lie beside it, with the suffix ``.words``."""
    return cache / f"{hashlib.sha1(text.encode('utf-8')).hexdigest()[:20]}.wav"


# Writes one line per word of an utterance: the word, its start and its end in seconds.
_WORD_TIMES = """(define (heardet_words utt file)
  (let ((fd (fopen file "w")))
    (mapcar (lambda (w) (format fd "%s %f %f\\n" (item.name w) (item.feat w "word_start") (item.feat w "word_end")))
            (utt.relation.items utt 'Word))
    (fclose fd)))"""


def festival_batch(texts: list[str], cache: Path) -> None:
    """Render every text not yet in ``cache``, with its word times, in one festival process (it costs ~1.3 s
    to start)."""
    todo = [t for t in dict.fromkeys(texts) if not festival_path(cache, t).with_suffix(".words").is_file()]
    if not todo:
        return
    cache.mkdir(parents=True, exist_ok=True)
    staging = cache / f".batch-{hashlib.sha1(''.join(todo).encode('utf-8')).hexdigest()[:12]}"
    staging.mkdir(exist_ok=True)
    lines = [f"({FESTIVAL_VOICE})", _WORD_TIMES]
    for k, text in enumerate(todo):
        said = text.replace("\\", " ").replace('"', " ")  # a Scheme string cannot hold these
        lines.append(f'(set! utt (utt.synth (Utterance Text "{said}")))')
        lines.append(f'(utt.save.wave utt "{staging / f"{k}.wav"}" \'riff)')
        lines.append(f'(heardet_words utt "{staging / f"{k}.words"}")')
    (staging / "batch.scm").write_text("\n".join(lines) + "\n", encoding="utf-8")
    try:
        run_tool(["festival", "-b", str(staging / "batch.scm")], timeout=60 + 5 * len(todo))
        lost = [text for k, text in enumerate(todo) if not (staging / f"{k}.words").is_file()]
        if lost:
            raise RuntimeError(f"festival wrote no audio for {len(lost)} text(s), e.g. {lost[0]!r}")
        for k, text in enumerate(todo):  # atomic renames, the times last: a text with times is whole
            (staging / f"{k}.wav").replace(festival_path(cache, text))
            (staging / f"{k}.words").replace(festival_path(cache, text).with_suffix(".words"))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def festival_words(cache: Path, text: str) -> list[tuple[str, float, float]]:
    """festival's words of ``text`` (lower case, ё as е) with their start and end in its rendering, seconds."""
    path = festival_path(cache, text).with_suffix(".words")
    if not path.is_file():
        raise RuntimeError(f"no festival rendering of {text!r}: call festival_batch first")
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        name, start, end = line.rsplit(" ", 2)
        out.extend((word, float(start), float(end)) for word in words(name))
    return out


def say_in_context(text: str, context: str, occurrence: int, tempo: float, festival_cache: Path) -> np.ndarray | None:
    """``text`` (its ``occurrence``-th time, from 0) cut out of festival's rendering of ``context`` at festival's
    word times, trimmed of silence and played at ``tempo``; None when festival's words of ``context`` do not
    contain those of ``text`` that often (numbers and abbreviations are spelled out)."""
    wanted, found = words(text), festival_words(festival_cache, context)
    spans = [(found[i][1], found[i + len(wanted) - 1][2]) for i in range(len(found) - len(wanted) + 1)
             if [w for w, _, _ in found[i : i + len(wanted)]] == wanted]
    if not wanted or occurrence >= len(spans):
        return None
    audio = read_wav(festival_path(festival_cache, context), "festival")
    start, end = spans[occurrence]
    return stretch(trim(audio[int(start * SAMPLE_RATE) : int(np.ceil(end * SAMPLE_RATE))], text), tempo)


def trim(audio: np.ndarray, what: str) -> np.ndarray:
    """Cut leading and trailing silence (10 ms frames TRIM_DB below the loudest), keeping 10 ms margins."""
    hop = SAMPLE_RATE // 100
    n = len(audio) // hop
    rms = np.sqrt(np.mean(audio[: n * hop].reshape(n, hop).astype(np.float64) ** 2, axis=1)) if n else np.zeros(1)
    if rms.max() <= 1e-6:
        raise RuntimeError(f"TTS produced no audible speech for {what!r}")
    loud = np.flatnonzero(rms >= rms.max() * 10 ** (-TRIM_DB / 20))
    return audio[max(0, (loud[0] - 1) * hop) : min(len(audio), (loud[-1] + 2) * hop)]


def stretch(audio: np.ndarray, tempo: float, semitones: int = 0) -> np.ndarray:
    """``audio`` played ``tempo`` times as fast and ``semitones`` higher, formants kept (Rubber Band)."""
    from pedalboard import time_stretch

    if tempo == 1.0 and semitones == 0:
        return audio
    out = time_stretch(audio.astype(np.float32), SAMPLE_RATE, stretch_factor=float(tempo),
                       pitch_shift_in_semitones=float(semitones), high_quality=False)
    return np.asarray(out[0], dtype=np.float32)


def say(voice: Voice, text: str, tempo: float, festival_cache: Path | None) -> np.ndarray:
    """One segment in ``voice``'s base voice at ``tempo`` × its rate, trimmed of silence (before :func:`reshape`)."""
    if voice.engine == "festival":
        if festival_cache is None or not festival_path(festival_cache, text).is_file():
            raise RuntimeError(f"no festival rendering of {text!r}: call festival_batch first")
        return stretch(trim(read_wav(festival_path(festival_cache, text), "festival"), text), tempo)
    if voice.engine == "rhvoice":
        return trim(rhvoice(text, voice.base, int(round(voice.rate * tempo)), voice.pitch), text)
    return trim(espeak(text, voice.base, int(round(voice.rate * tempo)), voice.pitch), text)


def reshape(voice: Voice, speech: np.ndarray) -> np.ndarray:
    """The speaker transform of a whole utterance: resample by the formant factor; festival also gets its
    tempo and pitch. Times in the result are times in ``speech`` × ``len(result) / len(speech)``."""
    import soxr

    moved = soxr.resample(speech.astype(np.float32), SAMPLE_RATE * voice.formant, SAMPLE_RATE, quality="HQ")
    if voice.engine == "festival":
        moved = stretch(moved, voice.rate / voice.formant, voice.pitch)  # back to the voice's own tempo
    return np.asarray(moved, dtype=np.float32)
