"""Generate a labelled Russian TTS dataset in the competition layout, deterministically and resumably.

Every clip is built the same way whatever its label: a carrier prefix, a *middle* and a carrier suffix
(either may be absent) are voiced separately by one voice, trimmed of silence and spliced with random
pauses. The middle is the phrase (positives), a near miss such as «не слышно» (hard negatives) or ordinary
speech, so only its words tell the classes apart; the phrase bounds are the middle's trimmed extent.
The words come from :mod:`heardet.synth_text`; this module voices, splices, augments and records them.
Each clip's choices come from ``np.random.default_rng([seed, split_index, clip_index])``.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import multiprocessing
import os
import re
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
from tqdm.auto import tqdm

from heardet.audio import SAMPLE_RATE, resample, write_wav
from heardet.synth_text import ORDINARY, _count, _near_misses, _pick, _plan_text, _words
from heardet.synth_text import (DEFAULT_HARD_NEGATIVES, ENDINGS, FILLER_PROB, FILLERS_AFTER,  # noqa: F401 - re-exported
                                FILLERS_BEFORE, POSITION_WEIGHTS, POSITIONS, TEMPLATES)

logger = logging.getLogger(__name__)

__all__ = ["SynthConfig", "SynthReport", "check_tts", "synthesize"]

GENERATOR_VERSION = 1  # bump when a change to this module or synth_text changes the clips a config makes
SPLITS = ("train", "test")
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
EDGE_SILENCE_S = (0.15, 0.7)  # silence before the first and after the last segment
PAUSE_S = (0.05, 0.35)  # pause between segments
REVERB_RT60_S = (0.15, 0.7)
TRIM_DB = 35.0  # a 10 ms frame this far below the loudest frame counts as silence
SPEECH_PEAK = 0.35  # peak of the clean speech before augmentation (about -9 dBFS)
NOISE_FLOOR = 3e-4  # std of the white noise floor every clip gets (about -70 dBFS), so pauses are not digital zero
MIN_CLIP_S = 1.2  # shorter clips get a longer trailing silence
BABBLE_SPEAKERS = 3
NOISE_KINDS = ("white", "pink", "babble")


@dataclass(frozen=True)
class SynthConfig:
    """What to generate; validated on creation (``ValueError`` names the field, value and allowed range).

    ``snr_db``/``gain_db`` are (low, high) ranges drawn uniformly per clip; ``hard_negatives``
    extends the near misses derived for ``phrase``; ``workers`` never changes the clips.
    """

    phrase: str = "не слышу"
    n_train: int = 300  # clips
    n_test: int = 200  # clips
    positive_fraction: float = 0.5  # share of clips that say the phrase
    hard_negative_fraction: float = 0.5  # share of negatives that are near misses
    festival_fraction: float = 0.5  # share of clips voiced by festival (rest espeak-ng)
    snr_db: tuple[float, float] = (5.0, 30.0)  # dB, additive noise (white, pink, babble)
    noise_prob: float = 0.6  # probability per clip
    telephone_prob: float = 0.3  # 8 kHz round trip + 300-3400 Hz band; probability per clip
    reverb_prob: float = 0.3  # exponentially decaying noise response; probability per clip
    gain_db: tuple[float, float] = (-12.0, 3.0)  # dB relative to speech peaking at about -9 dBFS
    hard_negatives: tuple[str, ...] = ()  # extra near-miss phrases
    seed: int = 0
    workers: int = 2  # processes

    def __post_init__(self) -> None:
        def fail(name: str, allowed: str) -> NoReturn:
            raise ValueError(f"SynthConfig.{name} must be {allowed}, got {getattr(self, name)!r}")

        def number(value: Any) -> bool:
            return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

        if not isinstance(self.phrase, str) or not _words(self.phrase):
            fail("phrase", "a string with at least one word")
        for name, low in (("n_train", 0), ("n_test", 0), ("seed", 0), ("workers", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                fail(name, f"an integer >= {low}")
        if self.n_train + self.n_test == 0:
            fail("n_train", "> 0 when n_test is 0 (nothing to generate)")
        for name in ("positive_fraction", "hard_negative_fraction", "festival_fraction", "noise_prob",
                     "telephone_prob", "reverb_prob"):
            if not number(getattr(self, name)) or not 0.0 <= getattr(self, name) <= 1.0:
                fail(name, "a number in [0, 1]")
        for name, (low, high) in (("snr_db", (-20.0, 80.0)), ("gain_db", (-60.0, 20.0))):
            value = getattr(self, name)
            if not (isinstance(value, (tuple, list)) and len(value) == 2 and all(map(number, value))
                    and low <= value[0] <= value[1] <= high):
                fail(name, f"a (low, high) pair in dB with {low} <= low <= high <= {high}")
            object.__setattr__(self, name, (float(value[0]), float(value[1])))
        if isinstance(self.hard_negatives, str) or not isinstance(self.hard_negatives, (tuple, list)) or any(
                not isinstance(h, str) or not _words(h) or _count(h, self.phrase) for h in self.hard_negatives):
            fail("hard_negatives", f"a tuple of phrases that do not contain the phrase {self.phrase!r}")
        object.__setattr__(self, "hard_negatives", tuple(self.hard_negatives))

    def clip_hash(self) -> str:
        """Hash of the settings that shape clips (not the counts, not ``workers``)."""
        shaping = {k: v for k, v in asdict(self).items() if k not in ("n_train", "n_test", "workers")}
        text = json.dumps({"generator_version": GENERATOR_VERSION, **shaping}, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class SynthReport:
    """What :func:`synthesize` did; counts are clips, ``seconds`` is wall time."""

    out_dir: Path
    n_train: int
    n_test: int
    n_generated: int
    n_skipped: int
    seconds: float
    positives_train: int
    positives_test: int


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


def _plan_clip(config: SynthConfig, near: list[str], split: str, index: int) -> dict[str, Any]:
    """Every random choice of one clip, drawn from its own generator in a fixed order."""
    split_index = SPLITS.index(split)
    phases = np.random.default_rng([config.seed, split_index]).random(2)
    rng = np.random.default_rng([config.seed, split_index, index])
    # Low-discrepancy sequences keep label and engine shares close to the fractions for any count.
    u = (phases[0] + index * 0.6180339887498949) % 1.0
    v = (phases[1] + index * 0.41421356237309515) % 1.0
    words = _plan_text(config, near, u, rng)
    if v < config.festival_fraction:
        engine, voice = "festival", FESTIVAL_VOICE
        rate = round(float(rng.uniform(*FESTIVAL_TEMPO)), 3)  # tempo factor
        pitch = int(rng.integers(FESTIVAL_PITCH_CENTS[0], FESTIVAL_PITCH_CENTS[1] + 1))  # cents
    else:
        engine, voice = "espeak-ng", f"ru+{_pick(rng, ESPEAK_VARIANTS)}"
        rate = int(rng.integers(ESPEAK_RATE_WPM[0], ESPEAK_RATE_WPM[1] + 1))  # words per minute
        pitch = int(rng.integers(ESPEAK_PITCH[0], ESPEAK_PITCH[1] + 1))
    edges = [round(float(rng.uniform(*EDGE_SILENCE_S)), 3) for _ in range(2)]
    pauses = [round(float(rng.uniform(*PAUSE_S)), 3) for _ in range(2)]
    noise = _pick(rng, NOISE_KINDS) if rng.random() < config.noise_prob else None
    babble = [{"voice": f"ru+{_pick(rng, ESPEAK_VARIANTS)}", "rate": int(rng.integers(130, 190)),
               "text": ", ".join(_pick(rng, ORDINARY) for _ in range(4))} for _ in range(BABBLE_SPEAKERS)]
    augment = {
        "noise": noise,
        "snr_db": round(float(rng.uniform(*config.snr_db)), 2) if noise else None,
        "telephone": bool(rng.random() < config.telephone_prob),
        "reverb": round(float(rng.uniform(*REVERB_RT60_S)), 3) if rng.random() < config.reverb_prob else None,
        "gain_db": round(float(rng.uniform(*config.gain_db)), 2),
    }
    return {
        "id": f"{split}_{index + 1:04d}", "split": split, "index": index, "seed": config.seed,
        "label": int(words["kind"] == "positive"), "kind": words["kind"], "text": words["text"],
        "middle": words["middle"], "position": words["position"], "prefix": words["prefix"],
        "suffix": words["suffix"], "engine": engine, "voice": voice, "rate": rate, "pitch": pitch,
        "edges_s": edges, "pauses_s": pauses, "augmentations": augment, "babble": babble if noise == "babble" else None,
    }


def _run(cmd: list[str], stdin: bytes | None = None, timeout: float = 120) -> bytes:
    try:
        done = subprocess.run(cmd, input=stdin, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{cmd[0]} timed out after {timeout:.0f} s: {' '.join(cmd)}") from None
    if done.returncode != 0:
        stderr = done.stderr.decode("utf-8", "replace").strip()
        raise RuntimeError(f"{cmd[0]} failed (exit {done.returncode}): {stderr or 'no stderr'}")
    return done.stdout


def _wav_from(cmd: list[str], stdin: bytes | None = None) -> np.ndarray:
    """Run a command that writes a WAV to stdout; return it as mono float32 at ``SAMPLE_RATE``."""
    import soundfile as sf

    try:
        audio, sr = sf.read(io.BytesIO(_run(cmd, stdin)), dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as exc:
        raise RuntimeError(f"{' '.join(cmd[:3])} gave no usable audio: {exc}") from None
    return resample(audio.mean(axis=1), int(sr), SAMPLE_RATE)


def _espeak(text: str, voice: str, rate: int, pitch: int = 50) -> np.ndarray:
    cmd = ["espeak-ng", "-v", voice, "-s", str(rate), "-p", str(pitch), "--stdout"]
    return _wav_from(cmd, stdin=text.encode("utf-8"))  # stdin: a text starting with "-" is no option


def _festival_batch(texts: list[str], workdir: Path) -> dict[str, Path]:
    """Synthesize every text with one festival process (it costs ~1.3 s to start); returns text -> wav."""
    paths = {text: workdir / f"fest_{i}.wav" for i, text in enumerate(dict.fromkeys(texts))}
    lines = [f"({FESTIVAL_VOICE})"]
    for text, path in paths.items():
        said = text.replace("\\", " ").replace('"', " ")  # a Scheme string cannot hold these
        lines.append(f'(utt.save.wave (utt.synth (Utterance Text "{said}")) "{path}" \'riff)')
    (workdir / "batch.scm").write_text("\n".join(lines) + "\n", encoding="utf-8")
    _run(["festival", "-b", str(workdir / "batch.scm")], timeout=60 + 5 * len(paths))
    lost = [text for text, path in paths.items() if not path.is_file()]
    if lost:
        raise RuntimeError(f"festival wrote no audio for {len(lost)} text(s), e.g. {lost[0]!r}")
    return paths


def _trim(audio: np.ndarray, what: str) -> np.ndarray:
    """Cut leading and trailing silence (10 ms frames TRIM_DB below the loudest), keeping 10 ms margins."""
    hop = SAMPLE_RATE // 100
    n = len(audio) // hop
    rms = np.sqrt(np.mean(audio[: n * hop].reshape(n, hop).astype(np.float64) ** 2, axis=1)) if n else np.zeros(1)
    if rms.max() <= 1e-6:
        raise RuntimeError(f"TTS produced no audible speech for {what!r}")
    loud = np.flatnonzero(rms >= rms.max() * 10 ** (-TRIM_DB / 20))
    return audio[max(0, (loud[0] - 1) * hop) : min(len(audio), (loud[-1] + 2) * hop)]


def _voice(spec: dict[str, Any], text: str, festival: dict[str, Path]) -> np.ndarray:
    if spec["engine"] == "festival":
        tempo, pitch = str(spec["rate"]), str(spec["pitch"])
        cmd = ["sox", "-R", str(festival[text]), "-t", "wav", "-e", "floating-point", "-b", "32", "-",
               "tempo", "-s", tempo, "pitch", pitch]  # float output: no random dither, repeatable
        return _trim(_wav_from(cmd), text)
    return _trim(_espeak(text, spec["voice"], spec["rate"], spec["pitch"]), text)


def _noise(spec: dict[str, Any], n: int, rng: np.random.Generator) -> np.ndarray:
    """White, pink (1/f power) or babble (other TTS voices talking) noise of ``n`` samples."""
    if spec["augmentations"]["noise"] == "white":
        return rng.standard_normal(n)
    if spec["augmentations"]["noise"] == "pink":
        spectrum = np.fft.rfft(rng.standard_normal(n))
        return np.fft.irfft(spectrum / np.sqrt(np.maximum(np.arange(len(spectrum)), 1.0)), n)
    mix = np.zeros(n)
    for speaker in spec["babble"]:
        speech = _trim(_espeak(speaker["text"], speaker["voice"], speaker["rate"]), speaker["text"])
        speech = np.tile(speech, n // len(speech) + 1)
        start = int(rng.integers(len(speech) - n + 1))
        mix += speech[start : start + n] / (np.sqrt(np.mean(speech**2)) + 1e-9)
    return mix


def _augment(spec: dict[str, Any], speech: np.ndarray, speech_power: float) -> tuple[np.ndarray, dict[str, Any]]:
    """Reverb, additive noise at the drawn SNR, telephone band, gain; returns audio and what was applied."""
    from scipy.signal import butter, fftconvolve, sosfiltfilt

    aug = dict(spec["augmentations"])
    rng = np.random.default_rng([spec["seed"], SPLITS.index(spec["split"]), spec["index"], 1])
    audio = speech.astype(np.float64)
    if aug["reverb"]:
        t = np.arange(int(aug["reverb"] * SAMPLE_RATE)) / SAMPLE_RATE
        response = rng.standard_normal(len(t)) * np.exp(-6.9 * t / aug["reverb"]) * 0.3
        response[0] = 1.0  # the direct path keeps the onsets where the bounds say
        wet = fftconvolve(audio, response)[: len(audio)]
        audio = wet * np.sqrt(np.mean(audio**2) / (np.mean(wet**2) + 1e-12))
    if aug["noise"]:
        noise = _noise(spec, len(audio), rng)
        audio = audio + noise * np.sqrt(speech_power / 10 ** (aug["snr_db"] / 10) / (np.mean(noise**2) + 1e-12))
    audio = audio + rng.standard_normal(len(audio)) * NOISE_FLOOR
    if aug["telephone"]:
        audio = resample(resample(audio.astype(np.float32), SAMPLE_RATE, 8000), 8000, SAMPLE_RATE)[: len(audio)]
        audio = sosfiltfilt(butter(4, (300, 3400), btype="bandpass", fs=SAMPLE_RATE, output="sos"), audio)
    gain = 10 ** (aug["gain_db"] / 20)
    peak = float(np.max(np.abs(audio))) * gain
    if peak > 0.99:  # never clip: lower the gain instead and record what was applied
        gain *= 0.99 / peak
        aug["gain_db"] = round(20 * math.log10(gain), 2)
    return (audio * gain).astype(np.float32), aug


def _render(spec: dict[str, Any], festival: dict[str, Path]) -> tuple[np.ndarray, dict[str, Any]]:
    """Voice, splice and augment one clip; returns the audio and its manifest row."""
    parts = [("prefix", spec["prefix"]), ("middle", spec["middle"]), ("suffix", spec["suffix"])]
    voiced = [(role, text, _voice(spec, text, festival)) for role, text in parts if text]
    pieces, segments = [np.zeros(int(spec["edges_s"][0] * SAMPLE_RATE), np.float32)], []
    cursor = len(pieces[0])
    for k, (role, text, audio) in enumerate(voiced):
        if k:
            pieces.append(np.zeros(int(spec["pauses_s"][k - 1] * SAMPLE_RATE), np.float32))
            cursor += len(pieces[-1])
        segments.append({"role": role, "text": text, "start": round(cursor / SAMPLE_RATE, 3),
                         "end": round((cursor + len(audio)) / SAMPLE_RATE, 3)})
        pieces.append(audio)
        cursor += len(audio)
    tail = max(int(spec["edges_s"][1] * SAMPLE_RATE), int(MIN_CLIP_S * SAMPLE_RATE) - cursor)
    pieces.append(np.zeros(tail, np.float32))
    speech = np.concatenate(pieces)
    scale = SPEECH_PEAK / (np.max(np.abs(speech)) + 1e-12)
    power = float(np.mean(np.concatenate([a for _, _, a in voiced]) ** 2)) * scale**2  # active speech only
    audio, applied = _augment(spec, speech * scale, power)
    middle = next(s for s in segments if s["role"] == "middle")
    row = {k: spec[k] for k in ("id", "split", "index", "label", "kind", "text", "middle", "position", "engine",
                                "voice", "rate", "pitch")}
    row.update(bounds=[[middle["start"], middle["end"]]], duration=round(len(audio) / SAMPLE_RATE, 3),
               segments=segments, augmentations=applied)
    return audio, row


def _render_chunk(out_dir: str, specs: list[dict[str, Any]]) -> list[tuple[str, dict | None, str | None]]:
    """Worker: render a chunk of clips and move each wav into place; one festival process per chunk."""
    out, results = Path(out_dir), []
    with tempfile.TemporaryDirectory(prefix="heardet-synth-") as tmp:
        festival, festival_error = {}, None
        texts = [s[k] for s in specs if s["engine"] == "festival" for k in ("prefix", "middle", "suffix") if s[k]]
        try:
            festival = _festival_batch(texts, Path(tmp)) if texts else {}
        except Exception as exc:  # noqa: BLE001 - fail its clips, let the espeak clips of the chunk go on
            festival_error = str(exc)
        for spec in specs:
            try:
                if spec["engine"] == "festival" and festival_error:
                    raise RuntimeError(festival_error)
                audio, row = _render(spec, festival)
                staging = out / ".tmp" / f"{spec['id']}.wav"  # same file system: the rename is atomic
                write_wav(staging, audio)
                os.replace(staging, out / f"wav_{spec['split']}" / f"{spec['id']}.wav")
                results.append((spec["id"], row, None))
            except Exception as exc:  # noqa: BLE001 - one bad clip must not stop the dataset
                results.append((spec["id"], None, f"{type(exc).__name__}: {exc}"))
    return results


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _record_config(out: Path, config: SynthConfig) -> None:
    meta = {"generator_version": GENERATOR_VERSION, "config_hash": config.clip_hash(), "config": asdict(config)}
    _atomic_write(out / "synth_config.json", json.dumps(meta, ensure_ascii=False, indent=2) + "\n")


def _claim(out: Path, config: SynthConfig) -> None:
    """Refuse a directory holding clips made with other settings; record this config in a new one."""
    path = out / "synth_config.json"
    current = json.loads(json.dumps(asdict(config), ensure_ascii=False))
    if path.exists():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
            old_hash, old_config = old["config_hash"], old["config"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path} is unreadable ({exc}); use a new out directory") from None
        if old_hash != config.clip_hash():
            changed = [k for k in current if k not in ("n_train", "n_test", "workers")
                       and old_config.get(k) != current[k]] or ["generator_version"]
            raise ValueError(f"{out} holds clips made with other synth settings (changed: {', '.join(changed)}; "
                             f"hash {old_hash} != {config.clip_hash()}); mixing them would make an inconsistent "
                             f"dataset: use a new out directory, or the settings in {path}")
    elif (out / "manifest.jsonl").exists() or any(any((out / f"wav_{s}").glob("*.wav")) for s in SPLITS):
        raise ValueError(f"{out} already holds a dataset that heardet.synth did not make (no {path.name}); "
                         f"use a new or empty out directory")
    else:
        _record_config(out, config)


def _read_manifest(out: Path) -> dict[str, dict[str, Any]]:
    """Manifest rows by id, keeping only clips whose wav is on disk."""
    rows, path = {}, out / "manifest.jsonl"
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines() if path.exists() else [], 1):
        try:
            row = json.loads(line)
            rows[row["id"]] = row
        except (ValueError, KeyError, TypeError):
            logger.warning("%s line %d is not a clip row (an interrupted write?); ignoring it", path, number)
    return {k: r for k, r in rows.items() if (out / f"wav_{r.get('split')}" / f"{k}.wav").is_file()}


def _write_outputs(out: Path, rows: dict[str, dict[str, Any]]) -> None:
    ordered = [rows[k] for k in sorted(rows)]
    _atomic_write(out / "manifest.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ordered))
    bounds = [f'  "{r["id"]}": {json.dumps(r["bounds"])}' for r in ordered if r["split"] == "train" and r["label"]]
    _atomic_write(out / "word_bounds.json", "{\n" + ",\n".join(bounds) + "\n}\n" if bounds else "{}\n")
    labels = "".join(f"{r['id']},{r['label']}\n" for r in ordered if r["split"] == "test")
    _atomic_write(out / "test_labels.csv", "id,label\n" + labels)


def synthesize(out_dir: str | Path, config: SynthConfig = SynthConfig(), progress: bool = True) -> SynthReport:
    """Generate, or finish generating, the dataset described by ``config`` in ``out_dir``.

    Args:
        out_dir: dataset directory, created if missing. A rerun with the same settings skips clips
            listed in its ``manifest.jsonl`` whose wav exists; ``n_train``/``n_test`` may grow.
        config: what to generate.
        progress: show a tqdm bar over clips.

    Returns:
        Clip counts (made now, skipped, positives per split) and the wall time.

    Raises:
        RuntimeError: a TTS tool is missing, or some clips failed (the others are kept; rerun to retry).
        ValueError: ``out_dir`` holds clips made with other settings, or more clips than asked for.
    """
    started = time.perf_counter()
    out = Path(out_dir)
    check_tts(festival=config.festival_fraction > 0)
    out.mkdir(parents=True, exist_ok=True)
    _claim(out, config)
    for sub in ("wav_train", "wav_test", ".tmp"):
        (out / sub).mkdir(exist_ok=True)
    rows = _read_manifest(out)
    counts = {"train": config.n_train, "test": config.n_test}
    extra = sorted(k for k, r in rows.items() if r["index"] >= counts[r["split"]])
    if extra:
        raise ValueError(f"{out} already holds more clips than asked for ({extra[0]} with n_train={config.n_train}, "
                         f"n_test={config.n_test}); ask for at least as many, or use a new out directory")
    near = _near_misses(config)
    if not near and config.hard_negative_fraction > 0:
        logger.warning("no near misses could be derived for %r; hard negatives become ordinary speech", config.phrase)
    todo = [spec for split in SPLITS for i in range(counts[split])
            if (spec := _plan_clip(config, near, split, i))["id"] not in rows]
    skipped = config.n_train + config.n_test - len(todo)
    logger.info("synth into %s: %d clips to make, %d already there", out, len(todo), skipped)
    size = max(1, min(32, math.ceil(len(todo) / (config.workers * 3))))  # ~3 chunks per worker, <= 32 clips
    chunks = [todo[i : i + size] for i in range(0, len(todo), size)]
    failures: list[str] = []
    with tqdm(total=len(todo), desc="synth", unit="clip", disable=not progress) as bar, \
            open(out / "manifest.jsonl", "a", encoding="utf-8") as manifest:

        def collect(results: list[tuple[str, dict | None, str | None]]) -> None:
            for clip_id, row, error in results:
                if row is None:
                    failures.append(f"{clip_id}: {error}")
                    logger.warning("clip %s failed: %s", clip_id, error)
                else:  # appended as soon as the wav is in place, so an interrupted run resumes here
                    rows[clip_id] = row
                    manifest.write(json.dumps(row, ensure_ascii=False) + "\n")
                    manifest.flush()
            bar.update(len(results))

        if config.workers == 1 or len(chunks) <= 1:
            for chunk in chunks:
                collect(_render_chunk(str(out), chunk))
        else:
            # fork: callers need no `if __name__ == "__main__"` guard; the workers only run numpy and subprocesses
            method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
            context = multiprocessing.get_context(method)
            with ProcessPoolExecutor(max_workers=config.workers, mp_context=context) as pool:
                for future in as_completed([pool.submit(_render_chunk, str(out), chunk) for chunk in chunks]):
                    collect(future.result())
    _write_outputs(out, rows)
    _record_config(out, config)  # now with these counts
    shutil.rmtree(out / ".tmp", ignore_errors=True)
    if failures:
        raise RuntimeError(f"{len(failures)} clip(s) could not be made (the other clips are kept; rerun to retry): "
                           + "; ".join(failures[:3]))
    report = SynthReport(
        out_dir=out, n_train=config.n_train, n_test=config.n_test, n_generated=len(todo), n_skipped=skipped,
        seconds=round(time.perf_counter() - started, 2),
        positives_train=sum(r["label"] for r in rows.values() if r["split"] == "train"),
        positives_test=sum(r["label"] for r in rows.values() if r["split"] == "test"),
    )
    logger.info("synth done in %.1f s: %d made, %d skipped, positives train %d test %d", report.seconds,
                report.n_generated, report.n_skipped, report.positives_train, report.positives_test)
    return report
