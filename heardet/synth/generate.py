"""Generate a labelled Russian TTS dataset in the competition layout, deterministically and resumably.

Every clip is built the same way whatever its label: its segments (carrier words, hesitations and the
*middle*, once or twice) are voiced separately in one base voice, trimmed of silence and spliced with
random pauses (festival says each middle within the clip's whole text, and it is cut out at festival's
word times, :func:`voices.say_in_context`, so that its units vary with the sentence); the whole
utterance is then reshaped into the clip's speaker (:func:`voices.reshape`) and augmented
(:mod:`heardet.augment`). The middle is the phrase (positives), a near miss such as
«не слышно» (hard negatives) or ordinary speech, so only its words tell the classes apart; the phrase
bounds are the middle segments' extents. The words come from :mod:`heardet.synth.text`, every choice
from :func:`heardet.synth.plan.plan_clip`; this module voices, splices, augments and records them.

Besides the clips, a dataset holds ``augment/`` (the room impulse responses and background speech its
augmentation drew from; fine-tune training draws from them too), ``manifest.jsonl`` (one row per clip:
words, frame, engine, voice and its settings, bounds, augmentation), ``word_bounds.json`` (train) and
``test_word_bounds.json`` beside ``test_labels.csv`` (test).
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import os
import shutil
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from heardet.audio import SAMPLE_RATE, write_wav
from heardet.augment import Banks, apply, make_rirs
from heardet.data import BOUNDS_FILE, MANIFEST_FILE, TEST_BOUNDS_FILE, TEST_LABELS_FILE, read_manifest
from heardet.files import atomic_write_text
from heardet.synth.config import GENERATOR_VERSION, SynthConfig, SynthReport
from heardet.synth.plan import SPLITS, ClipPlan, plan_clip
from heardet.synth.text import ORDINARY, near_misses
from heardet.synth.voices import (
    ESPEAK_VARIANTS,
    check_tts,
    espeak,
    festival_batch,
    reshape,
    say,
    say_in_context,
    trim,
)

logger = logging.getLogger(__name__)

SPEECH_PEAK = 0.35  # peak of the clean speech before augmentation (about -9 dBFS)
MIN_CLIP_S = 1.2  # shorter clips get a longer trailing silence, seconds
NOISE_FLOOR = 3e-4  # std of the white noise floor every clip gets (about -70 dBFS), so pauses are not digital zero
N_RIRS = 32  # room impulse responses in a dataset's bank
N_BACKGROUND = 24  # background-speech recordings in a dataset's bank
BACKGROUND_SENTENCES = 8  # ordinary sentences per background recording
FESTIVAL_CACHE = ".cache/festival"  # festival renderings by text, inside the dataset folder while it is made


def render(plan: ClipPlan, festival_cache: Path | None, banks: Banks) -> tuple[np.ndarray, dict[str, Any]]:
    """Voice, splice, reshape into the planned speaker and augment one clip; returns the audio and its manifest row."""
    voiced = []  # (segment, its audio, whether it was cut from the whole text)
    for seg in plan.words.segments:
        tempo = plan.middle_tempo if seg.role == "middle" else 1.0
        audio = None
        if seg.role == "middle" and plan.voice.engine == "festival" and festival_cache is not None:
            occurrence = sum(s.role == "middle" for s, _, _ in voiced)
            audio = say_in_context(seg.text, plan.words.text, occurrence, tempo, festival_cache)
        in_context = audio is not None
        voiced.append((seg, audio if in_context else say(plan.voice, seg.text, tempo, festival_cache), in_context))
    pieces, spans, cursor = [], [], 0
    for k, (_, audio, _) in enumerate(voiced):
        if k:
            pieces.append(np.zeros(int(plan.pauses_s[k - 1] * SAMPLE_RATE), np.float32))
            cursor += len(pieces[-1])
        spans.append((cursor, cursor + len(audio)))
        pieces.append(audio)
        cursor += len(audio)
    speech = np.concatenate(pieces)
    shaped = reshape(plan.voice, speech)
    ratio = len(shaped) / len(speech)  # the speaker transform scales every time in the utterance
    lead = int(plan.edges_s[0] * SAMPLE_RATE)
    tail = max(int(plan.edges_s[1] * SAMPLE_RATE), int(MIN_CLIP_S * SAMPLE_RATE) - lead - len(shaped))
    clean = np.concatenate([np.zeros(lead, np.float32), shaped, np.zeros(tail, np.float32)])
    clean *= SPEECH_PEAK / (np.max(np.abs(clean)) + 1e-12)
    clean += np.random.default_rng([plan.seed, SPLITS.index(plan.split), plan.index, 2]).standard_normal(
        len(clean)).astype(np.float32) * NOISE_FLOOR
    audio = apply(plan.augment, clean, banks)
    segments = [{"role": seg.role, "text": seg.text, "start": round((lead + a * ratio) / SAMPLE_RATE, 3),
                 "end": round((lead + b * ratio) / SAMPLE_RATE, 3), **({"in_context": True} if in_context else {})}
                for (seg, _, in_context), (a, b) in zip(voiced, spans)]
    said, speaker = plan.words, plan.voice
    row = {"id": plan.id, "split": plan.split, "index": plan.index, "label": plan.label, "kind": said.kind,
           "text": said.text, "middle": said.middle, "frame": said.frame, "position": said.position,
           "tempo": said.tempo, "repeats": said.repeats, "engine": speaker.engine, "voice": speaker.id,
           "voice_settings": {"base": speaker.base, "formant": speaker.formant, "rate": speaker.rate,
                              "pitch": speaker.pitch}}
    row.update(bounds=[[s["start"], s["end"]] for s in segments if s["role"] == "middle"],
               duration=round(len(audio) / SAMPLE_RATE, 3), segments=segments, augmentation=plan.augment.describe())
    return audio, row


def festival_texts(plans: Iterable[ClipPlan]) -> list[str]:
    """What festival renders for the festival clips of ``plans``, sorted and distinct: each segment alone, and each
    whole text (its middles are cut from it)."""
    return sorted({t for p in plans if p.voice.engine == "festival"
                   for t in (*(s.text for s in p.words.segments), p.words.text)})


def _render_chunk(out_dir: str, plans: list[ClipPlan]) -> list[tuple[str, dict | None, str | None]]:
    """Worker: render a chunk of clips and move each wav into place."""
    out, results = Path(out_dir), []
    banks = Banks.of_dataset(out)
    for plan in plans:
        try:
            audio, row = render(plan, out / FESTIVAL_CACHE, banks)
            staging = out / ".tmp" / f"{plan.id}.wav"  # same file system: the rename is atomic
            write_wav(staging, audio)
            os.replace(staging, out / f"wav_{plan.split}" / f"{plan.id}.wav")
            results.append((plan.id, row, None))
        except Exception as exc:  # noqa: BLE001 - one bad clip must not stop the dataset
            results.append((plan.id, None, f"{type(exc).__name__}: {exc}"))
    return results


def _festival_chunk(cache: str, texts: list[str]) -> str | None:
    """Worker: render festival texts into the cache; returns the error, if any."""
    try:
        festival_batch(texts, Path(cache))
        return None
    except Exception as exc:  # noqa: BLE001 - its clips fail and are reported; the others go on
        return str(exc)


def make_background_speech(out_dir: Path, count: int, seed: int) -> None:
    """``count`` recordings of ordinary speech (espeak-ng, any variant) for background-speech augmentation."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for k in range(count):
        path = out_dir / f"speech_{k:03d}.wav"
        if path.is_file():
            continue
        rng = np.random.default_rng([seed, 11, k])
        variant = ESPEAK_VARIANTS[int(rng.integers(len(ESPEAK_VARIANTS)))]
        text = ", ".join(ORDINARY[int(i)] for i in rng.integers(len(ORDINARY), size=BACKGROUND_SENTENCES))
        speech = trim(espeak(text, f"ru+{variant}", int(rng.integers(130, 190)), int(rng.integers(20, 80))), text)
        write_wav(path, speech * np.float32(SPEECH_PEAK / (np.max(np.abs(speech)) + 1e-12)))


def _record_config(out: Path, config: SynthConfig) -> None:
    meta = {"generator_version": GENERATOR_VERSION, "config_hash": config.clip_hash(), "config": asdict(config)}
    atomic_write_text(out / "synth_config.json", json.dumps(meta, ensure_ascii=False, indent=2) + "\n")


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
    elif (out / MANIFEST_FILE).exists() or any(any((out / f"wav_{s}").glob("*.wav")) for s in SPLITS):
        raise ValueError(f"{out} already holds a dataset that heardet.synth did not make (no {path.name}); "
                         f"use a new or empty out directory")
    else:
        _record_config(out, config)


def _read_manifest(out: Path) -> dict[str, dict[str, Any]]:
    """Manifest rows by id, keeping only clips whose wav is on disk."""
    rows = read_manifest(out / MANIFEST_FILE, keys=None)
    return {k: r for k, r in rows.items() if (out / f"wav_{r.get('split')}" / f"{k}.wav").is_file()}


def _write_outputs(out: Path, rows: dict[str, dict[str, Any]]) -> None:
    ordered = [rows[k] for k in sorted(rows)]
    atomic_write_text(out / MANIFEST_FILE, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ordered))
    for split, name in (("train", BOUNDS_FILE), ("test", TEST_BOUNDS_FILE)):
        bounds = [f'  "{r["id"]}": {json.dumps(r["bounds"])}' for r in ordered if r["split"] == split and r["label"]]
        atomic_write_text(out / name, "{\n" + ",\n".join(bounds) + "\n}\n" if bounds else "{}\n")
    labels = "".join(f"{r['id']},{r['label']}\n" for r in ordered if r["split"] == "test")
    atomic_write_text(out / TEST_LABELS_FILE, "id,label\n" + labels)


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
    check_tts(festival=config.festival_fraction > 0, rhvoice=config.rhvoice_fraction > 0)
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
    near = near_misses(config.phrase, config.hard_negatives)
    if not near and config.hard_negative_fraction > 0:
        logger.warning("no near misses could be derived for %r; hard negatives become ordinary speech", config.phrase)
    banks = Banks.of_dataset(out)
    make_rirs(banks.root / "rirs", N_RIRS, config.seed)
    make_background_speech(banks.root / "speech", N_BACKGROUND, config.seed)
    todo = [plan for split in SPLITS for i in range(counts[split])
            if (plan := plan_clip(config, near, split, i, banks)).id not in rows]
    skipped = config.n_train + config.n_test - len(todo)
    logger.info("synth into %s: %d clips to make, %d already there", out, len(todo), skipped)
    size = max(1, min(32, math.ceil(len(todo) / (config.workers * 3))))  # ~3 chunks per worker, <= 32 clips
    chunks = [todo[i : i + size] for i in range(0, len(todo), size)]
    texts = festival_texts(todo)
    text_chunks = [texts[i :: config.workers * 2] for i in range(config.workers * 2) if texts[i :: config.workers * 2]]
    failures: list[str] = []
    with tqdm(total=len(todo), desc="synth", unit="clip", disable=not progress) as bar, \
            open(out / MANIFEST_FILE, "a", encoding="utf-8") as manifest:

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

        # fork: callers need no `if __name__ == "__main__"` guard; the workers only run numpy and subprocesses
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        with ProcessPoolExecutor(max_workers=config.workers, mp_context=multiprocessing.get_context(method)) as pool:
            cache = str(out / FESTIVAL_CACHE)
            logger.info("festival: %d distinct texts to render (cached in %s)", len(texts), cache)
            errors = [e for e in pool.map(_festival_chunk, [cache] * len(text_chunks), text_chunks) if e]
            for error in errors[:3]:
                logger.warning("festival failed for some texts (their clips will fail): %s", error)
            for future in as_completed([pool.submit(_render_chunk, str(out), chunk) for chunk in chunks]):
                collect(future.result())
    _write_outputs(out, rows)
    _record_config(out, config)  # now with these counts
    shutil.rmtree(out / ".tmp", ignore_errors=True)
    if not failures:
        shutil.rmtree(out / ".cache", ignore_errors=True)  # kept after a failure, so a rerun starts warm
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
