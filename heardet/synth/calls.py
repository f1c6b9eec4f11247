"""Call-like recordings for whole-call scanning: stereo, telephone band, several minutes each.

Each call has an agent (left channel) and a customer (right channel), two speakers drawn like a
dataset clip's (:func:`heardet.synth.voices.draw_voice`, from the voices ``split`` may use). They
take turns: each turn is an utterance built like a clip's words (:func:`heardet.synth.text.plan_text`
with the carrier frames of ``split``), near misses on both sides, silences between turns, and now
and then a hold (the agent's side plays a quiet tone pattern, the customer is silent). In a share
of the calls, one customer turn says the phrase. Both channels go through a telephone line
(300–3400 Hz) and are written at 8 kHz, 16-bit.

Layout of ``out``::

    calls/<id>.wav      stereo, 8 kHz
    events.json         {"<id>": [["right", start_s, end_s], ...]}: where the phrase is said
    calls.jsonl         one row per call: duration, voices, turns (speaker, kind, text, start, end)
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from heardet.audio import SAMPLE_RATE
from heardet.augment import AugmentPlan, Banks
from heardet.files import atomic_write_text
from heardet.synth.config import SynthConfig
from heardet.synth.plan import SPLITS, ClipPlan
from heardet.synth.text import near_misses, plan_text
from heardet.synth.voices import check_tts, draw_voice, festival_batch

logger = logging.getLogger(__name__)

CALLS_DIR = "calls"
EVENTS_FILE = "events.json"
CALLS_MANIFEST = "calls.jsonl"
CALL_RATE = 8000  # Hz: what telephony records
CHANNELS = ("left", "right")  # agent, customer
GAP_S = (0.3, 2.0)  # silence between turns
HOLD_PROB = 0.04  # chance that a turn is followed by a hold
TURN_S = 3.6  # a turn and the gap before it last about this long on average
HOLD_S = (10.0, 40.0)
NEAR_MISS_SHARE = 0.25  # share of turns whose middle is a near miss (both speakers)
LINE_NOISE = 2e-3  # std of the line's hiss, both channels


@dataclass(frozen=True)
class CallsReport:
    out_dir: Path
    n_calls: int
    with_phrase: int
    hours: float
    seconds: float


def _turn_plan(config: SynthConfig, near: list[str], split: str, voice, kind: str, rng: np.random.Generator,
               name: str) -> ClipPlan:
    positive = 1.0 if kind == "positive" else 0.0
    hard = 1.0 if kind == "hard_negative" else 0.0
    words = plan_text(config.phrase, near, positive, hard, float(rng.random()) * 0.999, split, rng)
    edges = (0.05, 0.05)
    pauses = tuple(round(float(rng.uniform(0.05, 0.3)), 3) for _ in range(len(words.segments) - 1))
    return ClipPlan(id=name, split=split, index=0, seed=config.seed, words=words, voice=voice, edges_s=edges,
                    pauses_s=pauses, augment=AugmentPlan(seed=int(rng.integers(2**31))))


def _hold(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """A quiet on-hold pattern: two alternating tones, a beep every two seconds."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    freq = np.where((t % 2.0) < 1.0, 440.0, 554.0) * float(rng.uniform(0.9, 1.1))
    envelope = ((t % 2.0) % 1.0 < 0.6).astype(np.float32)
    return (0.05 * envelope * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _line(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The telephone line: hiss, 300–3400 Hz band, 8 kHz."""
    import soxr
    from scipy.signal import butter, sosfilt

    noisy = audio + rng.standard_normal(len(audio)).astype(np.float32) * LINE_NOISE
    band = sosfilt(butter(4, (300, 3400), btype="bandpass", fs=SAMPLE_RATE, output="sos"), noisy)
    return soxr.resample(band.astype(np.float32), SAMPLE_RATE, CALL_RATE)


def make_call(config: SynthConfig, near: list[str], split: str, index: int, minutes: float, with_phrase: bool,
              festival_cache: Path) -> tuple[np.ndarray, dict]:
    """One call: ``[samples, 2]`` at :data:`CALL_RATE` and its manifest row (turns and phrase events)."""
    from heardet.synth.generate import festival_texts, render

    rng = np.random.default_rng([config.seed, 77, SPLITS.index(split), index])
    engines = ("festival", "espeak-ng")
    agent = draw_voice(engines[int(rng.random() < 0.5)], split, rng)
    customer = draw_voice(engines[int(rng.random() < 0.5)], split, rng)
    target = minutes * 60.0
    n_turns = max(4, int(target / TURN_S))
    phrase_turn = int(rng.integers(1, n_turns // 2)) * 2 + 1 if with_phrase else -1  # a customer turn
    plans = []
    for turn in range(n_turns):
        speaker = turn % 2
        kind = "positive" if turn == phrase_turn else (
            "hard_negative" if rng.random() < NEAR_MISS_SHARE else "negative")
        plans.append((speaker, _turn_plan(config, near, split, (agent, customer)[speaker], kind, rng,
                                          f"call{index}_turn{turn}")))
    festival_batch(festival_texts(p for _, p in plans), festival_cache)
    tracks = [[], []]
    cursor = 0  # samples at 16 kHz
    turns, events = [], []
    for turn, (speaker, plan) in enumerate(plans):
        audio, row = render(plan, festival_cache, Banks())  # the plan's augmentation is empty
        gap = int(rng.uniform(*GAP_S) * SAMPLE_RATE)
        start = cursor + gap
        for k in (0, 1):
            tracks[k].append(np.zeros(gap, np.float32))
            tracks[k].append(audio if k == speaker else np.zeros(len(audio), np.float32))
        turns.append({"speaker": CHANNELS[speaker], "kind": row["kind"], "text": row["text"],
                      "start": round(start / SAMPLE_RATE, 3), "end": round((start + len(audio)) / SAMPLE_RATE, 3)})
        for a, b in row["bounds"]:
            if row["kind"] == "positive":
                events.append([CHANNELS[speaker], round(start / SAMPLE_RATE + a, 3), round(start / SAMPLE_RATE + b, 3)])
        cursor = start + len(audio)
        if rng.random() < HOLD_PROB:
            hold = _hold(float(rng.uniform(*HOLD_S)), rng)
            tracks[0].append(hold)
            tracks[1].append(np.zeros(len(hold), np.float32))
            cursor += len(hold)
    left, right = (np.concatenate(t) for t in tracks)
    stereo = np.stack([_line(left, rng), _line(right, rng)], axis=1)
    stereo *= 0.5 / max(1e-6, float(np.max(np.abs(stereo))))
    row = {"id": f"call_{index + 1:03d}", "split": split, "duration": round(len(stereo) / CALL_RATE, 3),
           "agent": agent.id, "customer": customer.id, "with_phrase": bool(events), "events": events,
           "turns": turns}
    return stereo, row


def make_calls(out_dir: str | Path, n_calls: int, minutes: float = 3.0, split: str = "test",
               phrase_share: float = 0.5, config: SynthConfig = SynthConfig(), progress: bool = True) -> CallsReport:
    """Write ``n_calls`` call recordings of about ``minutes`` each into ``out_dir`` (see the module docstring).

    ``split`` picks the voices and carrier sentences (``train`` for calls that choose an operating
    point, ``test`` for calls that measure it). Deterministic for a seed; a call already on disk is kept.
    """
    import soundfile as sf

    if n_calls < 1:
        raise ValueError(f"n_calls must be >= 1, got {n_calls!r}")
    if not 0.5 <= minutes <= 120:
        raise ValueError(f"minutes must be in [0.5, 120], got {minutes!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    started = time.perf_counter()
    check_tts(festival=True)
    out = Path(out_dir)
    (out / CALLS_DIR).mkdir(parents=True, exist_ok=True)
    near = near_misses(config.phrase, config.hard_negatives)
    manifest = out / CALLS_MANIFEST
    rows = {}
    if manifest.is_file():
        rows = {r["id"]: r for r in map(json.loads, manifest.read_text(encoding="utf-8").splitlines())}
    cache = out / ".cache" / "festival"
    picks = np.random.default_rng([config.seed, 78]).random(n_calls) < phrase_share
    for index in tqdm(range(n_calls), desc="calls", unit="call", disable=not progress):
        call_id = f"call_{index + 1:03d}"
        path = out / CALLS_DIR / f"{call_id}.wav"
        if call_id in rows and path.is_file():
            continue
        audio, row = make_call(config, near, split, index, minutes, bool(picks[index]), cache)
        staging = path.with_name(f".{path.name}.tmp")
        sf.write(str(staging), audio, CALL_RATE, subtype="PCM_16", format="WAV")
        staging.replace(path)
        rows[call_id] = row
    ordered = [rows[k] for k in sorted(rows)]
    atomic_write_text(manifest, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ordered))
    atomic_write_text(out / EVENTS_FILE, json.dumps({r["id"]: r["events"] for r in ordered}, indent=1) + "\n")
    hours = sum(r["duration"] for r in ordered) / 3600
    report = CallsReport(out, len(ordered), sum(r["with_phrase"] for r in ordered), hours,
                         round(time.perf_counter() - started, 1))
    logger.info("calls in %s: %d (%d with the phrase), %.2f h, %.1f s", out, report.n_calls, report.with_phrase,
                report.hours, report.seconds)
    return report


def read_events(path: str | Path) -> dict[str, list[tuple[str, float, float]]]:
    """``events.json``: call id -> [(channel, start_s, end_s)]."""
    from heardet.data import DataError

    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: cannot read events ({exc})") from None
    if not isinstance(raw, dict):
        raise DataError(f"{path}: expected a JSON object {{id: [[channel, start_s, end_s], ...]}}")
    out = {}
    for key, items in raw.items():
        try:
            out[Path(key).stem] = [(str(c), float(a), float(b)) for c, a, b in items]
        except (TypeError, ValueError):
            raise DataError(f"{path}: {key!r}: expected a list of [channel, start_s, end_s]") from None
    return out


def mine_negatives(calls_dir: str | Path, windows: list[tuple[str, str, float, float, float]], data_dir: str | Path,
                   limit: int = 200) -> list[str]:
    """Add the false-alarm ``windows`` (:func:`heardet.scan.false_alarms`) of calls in ``calls_dir`` to the
    training clips of ``data_dir`` as label-0 clips ``mined_<call>_<channel>_<ms>`` with manifest rows
    (``kind`` = ``mined``, the speaker's engine and voice, so folds stay grouped by voice); returns their ids.
    A window already mined is not added twice."""
    from heardet.audio import write_wav
    from heardet.data import MANIFEST_FILE, TRAIN_DIR, read_manifest
    from heardet.scan import read_segment

    calls_dir, data = Path(calls_dir), Path(data_dir)
    speakers = {}
    for line in (calls_dir / CALLS_MANIFEST).read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        speakers[row["id"]] = {"left": row["agent"], "right": row["customer"]}
    existing = read_manifest(data / MANIFEST_FILE, keys=None)
    added, rows = [], []
    for file, channel, start, end, value in windows[:limit]:
        call = Path(file).stem
        clip_id = f"mined_{call}_{channel}_{int(round(start * 1000)):08d}"
        if clip_id in existing:
            continue
        voice = speakers.get(call, {}).get(channel, "unknown/unknown")
        audio = read_segment(file, channel, start, end)
        write_wav(data / TRAIN_DIR / f"{clip_id}.wav", audio)
        rows.append({"id": clip_id, "split": "train", "index": -1, "label": 0, "kind": "mined",
                     "engine": voice.split("/")[0], "voice": voice, "source": f"{file} {channel} {start}-{end}",
                     "score": round(value, 4), "duration": round(len(audio) / SAMPLE_RATE, 3), "bounds": []})
        added.append(clip_id)
    with open(data / MANIFEST_FILE, "a", encoding="utf-8") as manifest:
        manifest.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    return added
