"""Whole-call scanning: phrase events with times, per channel, over recordings of any length.

A recording is streamed in blocks (never decoded whole), each channel resampled to 16 kHz on the
fly (or the channels mixed, ``mix=True``). Silero VAD (the model faster-whisper ships) marks the
speech in each block, and windows are placed on the speech: regions less than 1.5 s apart are
joined up to ``window_s`` (an utterance, with its context), padded by 0.5 s; a longer stretch
gets several windows ``hop_s`` apart; one with less than ``min_speech_s`` of speech is skipped,
so silence, holds and an idle channel cost no model calls. Without VAD, windows of ``window_s``
lie on a fixed grid ``hop_s`` apart. Windows go through the model's own pyfunc ``predict`` (the
contract: one ``audio`` row per window), so every approach scans the same way.

Windows scoring at or above the threshold become events: overlapping or close ones (within
``refractory_s``) merge into one, which takes its score and times from its best window. The times
are the phrase's (``phrase_start_s`` / ``phrase_end_s``) where the model gives frame scores, else
the best window's span.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from heardet.audio import SAMPLE_RATE, AudioError

if TYPE_CHECKING:
    import pandas as pd
from heardet.config import is_bool, is_number, setting, validate

logger = logging.getLogger(__name__)

CHANNEL_NAMES = {1: ("mono",), 2: ("left", "right")}
EVENT_COLUMNS = ("file", "channel", "start_s", "end_s", "score")
VAD_CHUNK = 512  # samples per Silero VAD step at 16 kHz


@dataclass(frozen=True)
class ScanConfig:
    """How recordings are scanned.

    Attributes:
        window_s: length of a scored window, seconds.
        hop_s: step between window starts, seconds.
        threshold: a window scoring at least this is a detection; None uses the model's own label.
        vad: score only windows that hold speech (Silero VAD).
        min_speech_s: shortest speech region that gets a window when ``vad`` is on.
        mix: mix the channels into one (``mono``) instead of scanning each.
        refractory_s: detections closer than this merge into one event.
        block_s: seconds decoded at a time (memory is bounded by this, not by the recording).
        batch_size: windows per model call.
    """

    window_s: float = setting(8.0, "seconds in [1, 30]", is_number(1, 30))
    hop_s: float = setting(4.0, "seconds in [0.5, 30]", is_number(0.5, 30))
    threshold: float | None = None
    vad: bool = setting(True, "True or False", is_bool)
    min_speech_s: float = setting(0.3, "seconds >= 0", is_number(0))
    mix: bool = setting(False, "True or False", is_bool)
    refractory_s: float = setting(2.0, "seconds >= 0", is_number(0))
    block_s: float = setting(60.0, "seconds in [10, 600]", is_number(10, 600))
    batch_size: int = 16

    def __post_init__(self) -> None:
        validate(self)
        if self.hop_s > self.window_s:
            raise ValueError(f"ScanConfig.hop_s={self.hop_s!r} is invalid; allowed: at most window_s ({self.window_s})")
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"ScanConfig.threshold={self.threshold!r} is invalid; allowed: a number in [0, 1]")


@dataclass(frozen=True)
class Event:
    """One detection: where (file, channel), when (seconds in the recording) and how sure."""

    file: str
    channel: str
    start_s: float
    end_s: float
    score: float


@dataclass
class FileScan:
    """What scanning one file found, and what it cost."""

    file: str
    duration_s: float = 0.0
    channels: tuple[str, ...] = ()
    speech_s: float = 0.0  # speech the VAD found, all channels summed (0 without VAD)
    windows: int = 0  # windows a fixed grid puts on every channel (what scanning without VAD scores)
    scored: int = 0  # windows sent to the model
    scored_s: float = 0.0  # seconds of audio sent to the model
    events: list[Event] = field(default_factory=list)
    # every scored window: (channel, start_s, end_s, score, phrase_start_s, phrase_end_s); the times
    # of the phrase are None where the model gives none. Events at any other threshold come from these.
    window_scores: list[tuple] = field(default_factory=list)
    error: str = ""

    def summary(self) -> dict:
        return {"file": self.file, "duration_s": round(self.duration_s, 3), "channels": ",".join(self.channels),
                "speech_s": round(self.speech_s, 2), "windows": self.windows, "scored": self.scored,
                "scored_s": round(self.scored_s, 2),
                "events": len(self.events), "max_score": max((w[3] for w in self.window_scores), default=0.0),
                "error": self.error}


def read_blocks(path: str | Path, block_s: float, mix: bool = False) -> Iterator[tuple[np.ndarray, tuple[str, ...]]]:
    """Yield ``[channels, samples]`` float32 blocks at 16 kHz, each channel resampled as a continuous stream.

    Raises:
        AudioError: the file cannot be opened or decoded (the message says what it is instead).
    """
    import soundfile as sf
    import soxr

    try:
        handle = sf.SoundFile(str(path))
    except (RuntimeError, sf.LibsndfileError) as exc:
        raise AudioError(str(path), f"not readable audio ({exc})") from None
    with handle:
        n_channels = 1 if mix else handle.channels
        names = CHANNEL_NAMES.get(n_channels, tuple(f"ch{k + 1}" for k in range(n_channels)))
        streams = None
        if handle.samplerate != SAMPLE_RATE:
            streams = [soxr.ResampleStream(handle.samplerate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
                       for _ in range(n_channels)]
        frames = max(1, int(block_s * handle.samplerate))
        while True:
            try:
                block = handle.read(frames, dtype="float32", always_2d=True)
            except (RuntimeError, sf.LibsndfileError) as exc:
                raise AudioError(str(path), f"decoding failed after {handle.tell() / handle.samplerate:.1f} s "
                                             f"({exc})") from None
            last = len(block) < frames
            channels = block.mean(axis=1, keepdims=True) if mix else block
            if streams is not None:
                out = [s.resample_chunk(np.ascontiguousarray(channels[:, k]), last=last) for k, s in enumerate(streams)]
                n = min(len(o) for o in out)
                channels = np.stack([o[:n] for o in out])
            else:
                channels = np.ascontiguousarray(channels.T)
            if channels.shape[1]:
                yield channels, names
            if last:
                return


class SpeechGate:
    """Silero VAD over a stream: speech regions (seconds) of one channel, block by block."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.regions: list[tuple[float, float]] = []

    def feed(self, audio: np.ndarray, offset_s: float) -> None:
        if not self.enabled:
            return
        if np.max(np.abs(audio), initial=0.0) < 1e-4:  # digital silence: nothing to ask the VAD
            return
        from faster_whisper.vad import VadOptions, get_speech_timestamps

        options = VadOptions(**VAD_OPTIONS)
        for region in get_speech_timestamps(audio, options, SAMPLE_RATE):
            start, end = offset_s + region["start"] / SAMPLE_RATE, offset_s + region["end"] / SAMPLE_RATE
            if self.regions and start <= self.regions[-1][1] + 1e-3:  # continues across the block edge
                self.regions[-1] = (self.regions[-1][0], max(end, self.regions[-1][1]))
            else:
                self.regions.append((start, end))

    def speech_in(self, start_s: float, end_s: float) -> float:
        """Seconds of speech between ``start_s`` and ``end_s``."""
        return sum(max(0.0, min(b, end_s) - max(a, start_s)) for a, b in self.regions if b > start_s and a < end_s)

    def total(self) -> float:
        return sum(b - a for a, b in self.regions)


def wav_bytes(audio: np.ndarray) -> bytes:
    """A float WAV of ``audio`` at 16 kHz: the contract's ``audio`` value for one window."""
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, audio, SAMPLE_RATE, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


def model_scorer(model) -> Callable[[list[np.ndarray]], pd.DataFrame]:
    """Score windows with a pyfunc model through its contract (one ``audio`` row per window)."""

    import pandas as pd

    def score(windows: list[np.ndarray]) -> pd.DataFrame:
        return model.predict(pd.DataFrame({"audio": [wav_bytes(w) for w in windows]}))

    return score


def merge_events(file: str, channel: str, hits: Sequence[tuple[float, float, float, float | None, float | None]],
                 refractory_s: float) -> list[Event]:
    """Events from detections ``(window_start, window_end, score, phrase_start, phrase_end)`` of one channel.

    Detections whose windows overlap or lie within ``refractory_s`` of the event so far join it; an
    event takes its score from its best detection, and its times from that detection's phrase times
    (when the model gives them) or its window.
    """
    events: list[Event] = []
    group: list[tuple] = []

    def close() -> None:
        best = max(group, key=lambda h: h[2])
        start, end = (best[3], best[4]) if best[3] is not None and not math.isnan(best[3]) else (best[0], best[1])
        events.append(Event(file, channel, round(float(start), 3), round(float(end), 3), round(float(best[2]), 6)))

    for hit in sorted(hits):
        if group and hit[0] > max(h[1] for h in group) + refractory_s:
            close()
            group = []
        group.append(hit)
    if group:
        close()
    return events


class _Channel:
    """One channel's stream: a buffer of the 16 kHz samples not yet decided on, its VAD, its next window."""

    def __init__(self, gate: SpeechGate):
        self.gate = gate
        self.buffer = np.zeros(0, np.float32)
        self.start = 0  # sample index of buffer[0]
        self.next_grid = 0  # the next grid window's start (no VAD)
        self.covered = 0  # where the last grid window ended
        self.next_region = 0  # the next speech region to place windows on (VAD)

    @property
    def end(self) -> int:
        return self.start + len(self.buffer)

    def append(self, audio: np.ndarray) -> None:
        self.gate.feed(audio, self.end / SAMPLE_RATE)
        self.buffer = np.concatenate([self.buffer, audio])

    def take(self, begin: int, stop: int) -> np.ndarray:
        return self.buffer[begin - self.start : stop - self.start].copy()

    def drop_before(self, sample: int) -> None:
        cut = min(max(0, sample - self.start), len(self.buffer))
        self.buffer = self.buffer[cut:]
        self.start += cut


REGION_PAD_S = 0.5  # audio kept on each side of a stretch of speech in its window
JOIN_GAP_S = 1.5  # speech regions closer than this share a window (one utterance, with its context)
VAD_MARGIN_S = 2.0  # speech ending this close to the data read so far may still go on: wait for more
VAD_OPTIONS = {"threshold": 0.25, "min_speech_duration_ms": 150, "min_silence_duration_ms": 300,
               "speech_pad_ms": 200}  # Silero's 0.5 missed a sixth of the telephone-band turns of synth calls


def _spans(begin: int, stop: int, window: int, hop: int) -> list[tuple[int, int]]:
    """Windows of at most ``window`` samples covering [begin, stop), ``hop`` apart."""
    if stop - begin <= window:
        return [(begin, stop)]
    starts = list(range(begin, stop - window, hop)) + [stop - window]
    return [(a, a + window) for a in starts]


def _windows(channel: _Channel, config: ScanConfig, final: bool) -> list[tuple[int, np.ndarray]]:
    """The windows of ``channel`` that can be decided on now, as (start sample, audio); the audio
    before the windows still to come is forgotten."""
    window, hop = int(config.window_s * SAMPLE_RATE), int(config.hop_s * SAMPLE_RATE)
    out = []
    if not config.vad:  # a fixed grid over everything
        while channel.next_grid < channel.end and (channel.next_grid + window <= channel.end or final):
            stop = min(channel.next_grid + window, channel.end)
            if stop <= channel.covered:  # the tail is inside the last window already
                break
            channel.covered = stop
            out.append((channel.next_grid, channel.take(channel.next_grid, stop)))
            if stop == channel.end and final:
                channel.next_grid = channel.end
                break
            channel.next_grid += hop
        channel.drop_before(channel.next_grid)
        return out
    # Windows placed on speech: regions less than JOIN_GAP_S apart are joined (up to a window's
    # length), padded, and scored in one window, or several `hop` apart when the stretch is longer.
    pad, margin, gap = (int(x * SAMPLE_RATE) for x in (REGION_PAD_S, VAD_MARGIN_S, JOIN_GAP_S))
    done = channel.next_region  # regions before this one have their windows: convert only the rest
    regions = [(int(round(a * SAMPLE_RATE)), int(round(b * SAMPLE_RATE))) for a, b in channel.gate.regions[done:]]
    first = 0
    while first < len(regions):
        last = first
        while (last + 1 < len(regions) and regions[last + 1][0] - regions[last][1] < gap
               and regions[last + 1][1] - regions[first][0] <= window):
            last += 1
        a, b = regions[first][0], regions[last][1]
        if not final and (b > channel.end - margin or last + 1 == len(regions) and b + gap > channel.end - margin):
            break  # the stretch, or the speech that may join it, is not all read yet
        if sum(e - s for s, e in regions[first : last + 1]) / SAMPLE_RATE >= config.min_speech_s:
            out += [(begin, channel.take(begin, stop))
                    for begin, stop in _spans(max(channel.start, a - pad), min(channel.end, b + pad), window, hop)]
        first = last + 1
    channel.next_region = done + first
    if first < len(regions):
        channel.drop_before(regions[first][0] - pad)
    else:
        channel.drop_before(channel.end - margin - pad)
    return out


def grid_windows(seconds: float, config: ScanConfig) -> int:
    """How many windows a fixed grid puts on ``seconds`` of one channel (what scanning without VAD scores)."""
    if seconds <= 0:
        return 0
    return 1 + max(0, math.ceil((seconds - config.window_s) / config.hop_s))


def scan_file(path: str | Path, score: Callable[[list[np.ndarray]], pd.DataFrame], config: ScanConfig,
              bar: tqdm | None = None) -> FileScan:
    """Scan one recording; never raises for a bad file (its :attr:`FileScan.error` says what went wrong)."""
    result = FileScan(str(path))
    channels: list[_Channel] = []
    pending: list[tuple[int, int, np.ndarray]] = []  # (channel, start sample, audio) waiting for a model call
    hits: dict[int, list[tuple]] = {}
    total = 0

    def flush() -> None:
        if not pending:
            return
        frame = score([audio for _, _, audio in pending])
        for (k, start, audio), row in zip(pending, frame.itertuples(index=False)):
            if int(row.label) == -1:
                raise RuntimeError(f"the model could not score a window: {row.error}")
            begin, end = start / SAMPLE_RATE, (start + len(audio)) / SAMPLE_RATE
            value = float(row.score)
            phrase = getattr(row, "phrase_start_s", None), getattr(row, "phrase_end_s", None)
            where = tuple(round(begin + p, 3) if p is not None and not math.isnan(p) else None for p in phrase)
            result.window_scores.append((result.channels[k], round(begin, 3), round(end, 3), value, *where))
            result.scored_s += len(audio) / SAMPLE_RATE
            detected = value >= config.threshold if config.threshold is not None else int(row.label) == 1
            if detected:
                hits.setdefault(k, []).append((begin, end, value, *where))
        result.scored += len(pending)
        pending.clear()

    def decide(final: bool) -> None:
        for k, channel in enumerate(channels):
            for begin, audio in _windows(channel, config, final):
                pending.append((k, begin, audio))
                if len(pending) >= config.batch_size:
                    flush()

    try:
        for block, names in read_blocks(path, config.block_s, config.mix):
            if not channels:
                result.channels = names
                channels = [_Channel(SpeechGate(config.vad)) for _ in names]
            for channel, audio in zip(channels, block):
                channel.append(audio)
            total += block.shape[1]
            if bar is not None:
                bar.update(round(block.shape[1] / SAMPLE_RATE, 2))
            decide(final=False)
        if not channels:
            raise AudioError(str(path), "empty (no audio frames)")
        decide(final=True)
        flush()
    except AudioError as exc:
        result.error = exc.reason
    result.duration_s = total / SAMPLE_RATE
    result.windows = len(channels) * grid_windows(result.duration_s, config)
    result.speech_s = sum(c.gate.total() for c in channels) if config.vad else 0.0
    for k, channel_hits in sorted(hits.items()):
        result.events += merge_events(str(path), result.channels[k], channel_hits, config.refractory_s)
    return result


def audio_seconds(files: Sequence[Path]) -> float:
    """Total duration of ``files`` from their headers (0 for one that cannot be read)."""
    from heardet.audio import audio_info

    seconds = 0.0
    for path in files:
        try:
            seconds += audio_info(path)[0]
        except (AudioError, OSError):
            pass
    return seconds


def scan_files(files: Sequence[Path], score: Callable[[list[np.ndarray]], pd.DataFrame], config: ScanConfig,
               progress: bool = True) -> list[FileScan]:
    """Scan every file (a broken one is reported in its :class:`FileScan`, the rest go on)."""
    results = []
    with tqdm(total=round(audio_seconds(files), 2), desc="scanning", unit="s audio", disable=not progress) as bar:
        for path in files:
            results.append(scan_file(path, score, config, bar))
            if results[-1].error:
                logger.warning("%s: %s", path, results[-1].error)
    return results


def timed_scan(model, files: Sequence[Path], config: ScanConfig,
               progress: bool = True) -> tuple[list[FileScan], float]:
    """:func:`scan_files` with a pyfunc ``model``, and the seconds it took."""
    import time

    started = time.perf_counter()
    results = scan_files(files, model_scorer(model), config, progress)
    return results, time.perf_counter() - started


def files_frame(results: Sequence[FileScan]) -> pd.DataFrame:
    """One row per file (:meth:`FileScan.summary`)."""
    import pandas as pd

    return pd.DataFrame([r.summary() for r in results])


def events_frame(results: Sequence[FileScan]) -> pd.DataFrame:
    """One row per event, in file and time order."""
    import pandas as pd

    rows = [asdict(e) for r in results for e in r.events]
    return pd.DataFrame(rows, columns=list(EVENT_COLUMNS))


def events_at(result: FileScan, threshold: float, refractory_s: float) -> list[Event]:
    """The events of a scanned file had the threshold been ``threshold`` (no second model pass).

    A window whose phrase times the model gave only above its own threshold falls back to its span."""
    by_channel: dict[str, list[tuple]] = {}
    for channel, start, end, value, *where in result.window_scores:
        if value >= threshold:
            by_channel.setdefault(channel, []).append((start, end, value, *where))
    return [e for channel, hits in by_channel.items() for e in merge_events(result.file, channel, hits, refractory_s)]


@dataclass(frozen=True)
class CallMetrics:
    """How scanning did against known phrase events.

    Attributes:
        threshold: the score a window needed.
        event_recall: share of true events that a detected event overlaps (same file and channel).
        false_accepts: detected events that overlap no true event.
        hours: hours of audio scanned.
        fa_per_hour: ``false_accepts / hours``.
        call_f1: macro F1 of "the call holds the phrase" (any event) against the truth.
        onset_error_s: median |detected start - true start| over the true events found.
        true_events: how many true events there are.
    """

    threshold: float
    event_recall: float
    false_accepts: int
    hours: float
    fa_per_hour: float
    call_f1: float
    onset_error_s: float | None
    true_events: int

    def render(self) -> str:
        onset = "—" if self.onset_error_s is None else f"{self.onset_error_s:.2f} s"
        at = "the model's own threshold" if math.isnan(self.threshold) else f"threshold {self.threshold:.6g}"
        return (f"{at}: event recall {self.event_recall:.3f} of {self.true_events}, "
                f"{self.false_accepts} false accepts in {self.hours:.2f} h = {self.fa_per_hour:.2f} FA/h, "
                f"call macro F1 {self.call_f1:.3f}, median onset error {onset}")


MATCH_SLACK_S = 0.5  # a detection within this of a true event still counts as overlapping it


def call_metrics(results: Sequence[FileScan], truth: dict[str, list[tuple[str, float, float]]],
                 threshold: float | None, refractory_s: float) -> CallMetrics:
    """Event recall, false accepts per hour, call-level macro F1 and onset error at ``threshold``
    (None: the events the scan found, at the threshold it ran with)."""
    from heardet.metrics import score

    found, false_accepts, onsets, calls_true, calls_pred = 0, 0, [], [], []
    n_true = 0
    for result in results:
        if result.error:
            continue
        events = result.events if threshold is None else events_at(result, threshold, refractory_s)
        true = truth.get(Path(result.file).stem, [])
        n_true += len(true)
        matched = set()
        for event in events:
            hits = [i for i, (channel, a, b) in enumerate(true) if channel == event.channel
                    and event.start_s <= b + MATCH_SLACK_S and event.end_s >= a - MATCH_SLACK_S]
            if not hits:
                false_accepts += 1
            for i in hits:
                if i not in matched:
                    matched.add(i)
                    onsets.append(abs(event.start_s - true[i][1]))
        found += len(matched)
        calls_true.append(int(bool(true)))
        calls_pred.append(int(bool(events)))
    hours = sum(r.duration_s for r in results if not r.error) / 3600
    return CallMetrics(float("nan") if threshold is None else float(threshold), found / n_true if n_true else float("nan"), false_accepts, hours,
                       false_accepts / hours if hours else float("nan"),
                       score(calls_true, calls_pred).macro_f1 if calls_true else float("nan"),
                       float(np.median(onsets)) if onsets else None, n_true)


def det_points(results: Sequence[FileScan], truth: dict[str, list[tuple[str, float, float]]],
               refractory_s: float) -> list[CallMetrics]:
    """:func:`call_metrics` at every distinct window score (at most 200 of them, spread evenly): a DET curve."""
    values = np.unique([w[3] for r in results for w in r.window_scores])
    if len(values) > 200:
        values = values[np.linspace(0, len(values) - 1, 200).astype(int)]
    return [call_metrics(results, truth, float(t), refractory_s) for t in values]


def operating_point(points: Sequence[CallMetrics], target_fa_per_hour: float) -> CallMetrics | None:
    """The lowest threshold whose false accepts per hour is at most the target (the most recall for it)."""
    allowed = [p for p in points if p.fa_per_hour <= target_fa_per_hour]
    return min(allowed, key=lambda p: p.threshold) if allowed else None


FA_TARGETS = (0.5, 1.0, 5.0)  # false accepts per hour whose thresholds a calls evaluation reports


@dataclass
class CallsEvaluation:
    """A model scanned over calls with known events: metrics as scanned, the DET curve and operating points."""

    metrics: CallMetrics
    points: list[CallMetrics]
    operating_points: dict[float, float | None]  # target FA/h -> threshold (None: not reachable)
    results: list[FileScan]
    seconds: float

    def render(self) -> str:
        audio = sum(r.duration_s for r in self.results)
        lines = [f"  {self.metrics.render()}",
                 f"  scanned {audio / 3600:.2f} h in {self.seconds:.0f} s ({audio / max(self.seconds, 1e-9):.0f}× real "
                 f"time); {sum(r.scored for r in self.results)} of {sum(r.windows for r in self.results)} windows scored"]
        for target, threshold in self.operating_points.items():
            if threshold is None:
                lines.append(f"  at most {target:g} FA/h: not reachable on these calls")
                continue
            point = next(p for p in self.points if p.threshold == threshold)
            lines.append(f"  at most {target:g} FA/h: {point.render()}")
        return "\n".join(lines)


def evaluate_calls(model, files: Sequence[Path], events_path: str | Path, config: ScanConfig,
                   progress: bool = True) -> CallsEvaluation:
    """Scan ``files`` with ``model`` and score the events against ``events_path`` (``events.json``)."""
    from heardet.synth.calls import read_events

    truth = read_events(events_path)
    results, seconds = timed_scan(model, files, config, progress)
    points = det_points(results, truth, config.refractory_s)
    chosen = {t: (p.threshold if (p := operating_point(points, t)) else None) for t in FA_TARGETS}
    return CallsEvaluation(call_metrics(results, truth, config.threshold, config.refractory_s), points, chosen,
                           results, seconds)


def false_alarms(results: Sequence[FileScan], truth: dict[str, list[tuple[str, float, float]]],
                 threshold: float) -> list[tuple[str, str, float, float, float]]:
    """Windows scoring at least ``threshold`` that overlap no true event of their channel:
    ``(file, channel, start_s, end_s, score)``, highest score first. The hard negatives to mine."""
    out = []
    for result in results:
        true = truth.get(Path(result.file).stem, [])
        for channel, start, end, value, *_ in result.window_scores:
            if value >= threshold and not any(c == channel and start <= b + MATCH_SLACK_S and end >= a - MATCH_SLACK_S
                                              for c, a, b in true):
                out.append((result.file, channel, start, end, value))
    return sorted(out, key=lambda w: -w[4])


def read_segment(path: str | Path, channel: str, start_s: float, end_s: float) -> np.ndarray:
    """``start_s``..``end_s`` of one channel (``left``/``right``/``mono``: the mix) of a file, at 16 kHz."""
    import soundfile as sf
    import soxr

    with sf.SoundFile(str(path)) as handle:
        handle.seek(int(start_s * handle.samplerate))
        block = handle.read(int((end_s - start_s) * handle.samplerate), dtype="float32", always_2d=True)
        names = CHANNEL_NAMES.get(handle.channels, ())
        audio = block.mean(axis=1) if channel == "mono" else block[:, names.index(channel)]
        if handle.samplerate != SAMPLE_RATE:
            audio = soxr.resample(audio, handle.samplerate, SAMPLE_RATE)
    return np.ascontiguousarray(audio, dtype=np.float32)
