"""The speech engines: espeak-ng and festival (Russian), with sox for tempo and pitch."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
from pathlib import Path
import numpy as np

from heardet.audio import SAMPLE_RATE, resample

FESTIVAL_VOICE = "voice_msu_ru_nsh_clunits"
FESTIVAL_VOICE_DIRS = ("/usr/share/festival/voices/russian/msu_ru_nsh_clunits",)
ESPEAK_VARIANTS = tuple(
    "m1 m2 m3 m4 m5 m6 m7 m8 f1 f2 f3 f4 f5 klatt klatt2 klatt3 klatt4 Alex Andy Annie aunty belinda boris david "
    "Denis Diogo ed edward Gene grandma grandpa Hugo iven john Lee linda Marco max Michael norbert paul pedro "
    "quincy rob robert sandro shelby steph travis victor zac anika".split())
ESPEAK_RATE_WPM = (120, 190)
ESPEAK_PITCH = (30, 70)  # espeak-ng pitch units, 0..99
FESTIVAL_TEMPO = (0.85, 1.15)  # sox tempo factor applied to festival speech
FESTIVAL_PITCH_CENTS = (-250, 250)  # sox pitch shift applied to festival speech
TRIM_DB = 35.0  # a 10 ms frame this far below the loudest frame counts as silence


def check_tts(festival: bool = True) -> None:
    """Check that espeak-ng (Russian), sox and, if ``festival``, festival with festvox-ru are installed.

    Raises:
        RuntimeError: naming what is missing and the ``apt-get install`` command that adds it.
    """
    missing = []
    if shutil.which("espeak-ng") is None:
        missing.append("espeak-ng")
    elif not re.search(r"\bru\b", subprocess.run(["espeak-ng", "--voices=ru"], capture_output=True,
                                                  text=True, check=False).stdout):
        missing.append("espeak-ng-data (Russian voice 'ru')")
    if shutil.which("sox") is None:
        missing.append("sox")
    if festival and shutil.which("festival") is None:
        missing += ["festival", "festvox-ru"]
    elif festival and not any(Path(d).is_dir() for d in FESTIVAL_VOICE_DIRS):
        missing.append(f"festvox-ru (festival voice {FESTIVAL_VOICE})")
    if missing:
        packages = " ".join(sorted({m.split()[0] for m in missing}))
        raise RuntimeError(f"TTS tools missing: {', '.join(missing)}. Install them with: "
                           f"sudo apt-get install -y {packages}")


def run_tool(cmd: list[str], stdin: bytes | None = None, timeout: float = 120) -> bytes:
    """Run a TTS or audio tool; its failure becomes a RuntimeError carrying its stderr."""
    try:
        done = subprocess.run(cmd, input=stdin, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{cmd[0]} timed out after {timeout:.0f} s: {' '.join(cmd)}") from None
    if done.returncode != 0:
        stderr = done.stderr.decode("utf-8", "replace").strip()
        raise RuntimeError(f"{cmd[0]} failed (exit {done.returncode}): {stderr or 'no stderr'}")
    return done.stdout


def wav_from(cmd: list[str], stdin: bytes | None = None) -> np.ndarray:
    """Run a command that writes a WAV to stdout; return it as mono float32 at ``SAMPLE_RATE``."""
    import soundfile as sf

    try:
        audio, sr = sf.read(io.BytesIO(run_tool(cmd, stdin)), dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as exc:
        raise RuntimeError(f"{' '.join(cmd[:3])} gave no usable audio: {exc}") from None
    return resample(audio.mean(axis=1), int(sr), SAMPLE_RATE)


def espeak(text: str, voice: str, rate: int, pitch: int = 50) -> np.ndarray:
    """``text`` said by espeak-ng ``voice`` at ``rate`` words per minute and ``pitch`` (0..99)."""
    cmd = ["espeak-ng", "-v", voice, "-s", str(rate), "-p", str(pitch), "--stdout"]
    return wav_from(cmd, stdin=text.encode("utf-8"))  # stdin: a text starting with "-" is no option


def festival_batch(texts: list[str], workdir: Path) -> dict[str, Path]:
    """Synthesize every text with one festival process (it costs ~1.3 s to start); returns text -> wav."""
    paths = {text: workdir / f"fest_{i}.wav" for i, text in enumerate(dict.fromkeys(texts))}
    lines = [f"({FESTIVAL_VOICE})"]
    for text, path in paths.items():
        said = text.replace("\\", " ").replace('"', " ")  # a Scheme string cannot hold these
        lines.append(f'(utt.save.wave (utt.synth (Utterance Text "{said}")) "{path}" \'riff)')
    (workdir / "batch.scm").write_text("\n".join(lines) + "\n", encoding="utf-8")
    run_tool(["festival", "-b", str(workdir / "batch.scm")], timeout=60 + 5 * len(paths))
    lost = [text for text, path in paths.items() if not path.is_file()]
    if lost:
        raise RuntimeError(f"festival wrote no audio for {len(lost)} text(s), e.g. {lost[0]!r}")
    return paths


def trim(audio: np.ndarray, what: str) -> np.ndarray:
    """Cut leading and trailing silence (10 ms frames TRIM_DB below the loudest), keeping 10 ms margins."""
    hop = SAMPLE_RATE // 100
    n = len(audio) // hop
    rms = np.sqrt(np.mean(audio[: n * hop].reshape(n, hop).astype(np.float64) ** 2, axis=1)) if n else np.zeros(1)
    if rms.max() <= 1e-6:
        raise RuntimeError(f"TTS produced no audible speech for {what!r}")
    loud = np.flatnonzero(rms >= rms.max() * 10 ** (-TRIM_DB / 20))
    return audio[max(0, (loud[0] - 1) * hop) : min(len(audio), (loud[-1] + 2) * hop)]


def voice(engine: str, name: str, rate: float, pitch: int, text: str, festival: dict[str, Path]) -> np.ndarray:
    """``text`` said by voice ``name`` of ``engine``, trimmed of silence.

    For festival, ``rate`` is a sox tempo factor and ``pitch`` a shift in cents applied to the
    speech :func:`festival_batch` rendered (``festival``: text → wav); for espeak-ng they are
    words per minute and pitch units (0..99).
    """
    if engine == "festival":
        tempo, pitch = str(rate), str(pitch)
        cmd = ["sox", "-R", str(festival[text]), "-t", "wav", "-e", "floating-point", "-b", "32", "-",
               "tempo", "-s", tempo, "pitch", pitch]  # float output: no random dither, repeatable
        return trim(wav_from(cmd), text)
    return trim(espeak(text, name, int(rate), pitch), text)
