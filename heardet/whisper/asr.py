"""Transcribe audio with Whisper: two backends behind one interface, plus a transcript cache.

- ``faster-whisper`` (CTranslate2, int8 on CPU): the default for models that exist in
  CTranslate2 form, which includes the bundled offline ``whisper-base``.
- ``transformers``: the Hugging Face pipeline, for any Hugging Face Whisper, on GPU when
  one is present.

Decoding is greedy in Russian by default, with no temperature fallback unless asked
(fallback can triple the time on noisy clips). faster-whisper encodes a recording of up to 29 s at
its own length plus 1 s (``DecodeOptions.window``); longer recordings, and every recording in the
transformers backend, are transcribed in Whisper's 30 s windows.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from tqdm.auto import tqdm

from heardet.audio import (
    SAMPLE_RATE,
    AudioError,
    AudioSource,
    decode_audio,
    read_source_bytes,
)
from heardet.config import (
    is_bool,
    is_int,
    is_number,
    is_text,
    one_of,
    setting,
    validate,
)
from heardet.devices import resolve_device
from heardet.whisper.cache import TranscriptCache, content_hash, dataclass_payload

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "faster-whisper", "transformers")
FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
MAX_WINDOW_TOKENS = 440  # Whisper's 448-token limit less the prompt
WINDOWS = ("content", "30s")
CONTENT_PAD_S = 1.0  # silence after a recording encoded at its own length (window="content")
CONTENT_WINDOW_MAX_S = 29.0  # longer recordings take faster-whisper's 30 s windows
FRAMES_PER_SECOND = 100  # Whisper's log-mel frames
# faster-whisper's defaults for skipping a window as silence: no-speech probability above this ...
NO_SPEECH_THRESHOLD = 0.6
LOG_PROB_THRESHOLD = -1.0  # ... unless the decoded tokens' mean log probability is above this


class _DefaultCache:
    """The type of :data:`DEFAULT_CACHE`."""

    def __repr__(self) -> str:
        return "DEFAULT_CACHE"


DEFAULT_CACHE = _DefaultCache()
"""``cache=DEFAULT_CACHE`` (the default): the shared transcript cache of :func:`default_cache`."""


@dataclass(frozen=True)
class DecodeOptions:
    """How to decode. Part of the transcript cache key.

    Attributes:
        language: ISO code; Whisper's auto-detection is unreliable on synthetic speech.
        beam_size: 1 is greedy (fast); 5 is Whisper's default (about 2.5× slower on CPU).
        temperature_fallback: re-decode at rising temperatures when a window looks wrong.
        word_timestamps: also return per-word start/end times.
        max_tokens_per_second: decoding stops after this many tokens per second of audio
            (plus a margin; per 30 s window). Speech needs about 8; the cap stops greedy
            decoding's repetition loops on noise, which otherwise run to 448 tokens.
        window: ``content``: the faster-whisper backend encodes a recording of up to
            :data:`CONTENT_WINDOW_MAX_S` at its own length plus :data:`CONTENT_PAD_S` of silence, not padded
            to 30 s, when neither word timestamps nor temperature fallback are asked for (those take
            faster-whisper's own 30 s path). The encoder is most of the time on a CPU, so a 4 s clip takes a
            quarter of it (``benchmarks/transcribe_speed.py``). ``30s``: always Whisper's 30 s window. The
            transformers backend always uses 30 s windows (its Whisper takes no other length).
    """

    def max_new_tokens(self, seconds: float) -> int:
        """The token budget of one window of ``seconds`` of audio."""
        return min(MAX_WINDOW_TOKENS, int(self.max_tokens_per_second * min(seconds, 30.0)) + 16)

    language: str = setting("ru", "an ISO code such as 'ru'", lambda v: isinstance(v, str) and v.isalpha())
    beam_size: int = setting(1, "an integer >= 1", is_int(1), "1 is greedy; 5 is Whisper's default.")
    temperature_fallback: bool = setting(False, "True or False", is_bool,
                                         "Re-decode hard windows at higher temperature.")
    word_timestamps: bool = setting(False, "True or False", is_bool, "Add per-word times.")
    max_tokens_per_second: float = setting(12.0, "a number > 0", is_number(0, low_open=True))
    window: str = setting("content", "'content' or '30s'", one_of(*WINDOWS),
                          "faster-whisper: encode a recording of up to 29 s at its own length plus 1 s "
                          "('content', about 4x faster on CPU) or padded to Whisper's 30 s window ('30s').")

    def __post_init__(self) -> None:
        validate(self)


@dataclass(frozen=True)
class TranscriberConfig:
    """Which Whisper transcribes, and with which backend (see :func:`make_transcriber`)."""

    model: str = setting("whisper-base", "a Whisper name, Hugging Face id or local directory", is_text,
                         "Whisper name, HF id or local dir.")
    backend: str = setting("auto", " or ".join(BACKENDS), one_of(*BACKENDS))

    def __post_init__(self) -> None:
        validate(self)


@dataclass(frozen=True)
class Word:
    """One recognised word with its time span in seconds."""

    text: str
    start: float
    end: float
    probability: float = 1.0


@dataclass(frozen=True)
class Transcript:
    """What was said in one recording."""

    text: str
    language: str
    duration_s: float
    words: tuple[Word, ...] = ()

    @classmethod
    def from_payload(cls, payload: dict) -> Transcript:
        words = tuple(Word(**w) for w in payload.get("words", ()))
        return cls(payload["text"], payload["language"], payload["duration_s"], words)


@dataclass(frozen=True)
class TranscriptResult:
    """The outcome for one input: a transcript, or the error that prevented one."""

    source: str
    transcript: Transcript | None
    error: str = ""
    cached: bool = False

    @property
    def text(self) -> str:
        return self.transcript.text if self.transcript else ""


class Transcriber:
    """Base class: subclasses implement :meth:`transcribe_arrays`."""

    backend = "base"

    def __init__(self, model: str, options: DecodeOptions | None = None):
        self.model = model
        self.options = options or DecodeOptions()

    @property
    def identity(self) -> str:
        """Everything that changes a transcript: the cache key's non-audio part."""
        return f"{self.backend}|{self.model}|{json.dumps(asdict(self.options), sort_keys=True)}"

    def transcribe_arrays(self, audios: Sequence[np.ndarray]) -> list[Transcript]:
        """Transcribe 16 kHz mono float32 arrays."""
        raise NotImplementedError

    def transcribe(
        self,
        sources: Sequence[AudioSource],
        cache: TranscriptCache | _DefaultCache | None = DEFAULT_CACHE,
        progress: bool = True,
        batch_size: int = 8,
        names: Sequence[str] | None = None,
    ) -> list[TranscriptResult]:
        """Transcribe many inputs; unreadable ones get an error and never stop the batch.

        Args:
            sources: paths, URIs, bytes or base64 text of audio files.
            cache: where to look transcripts up and store new ones: by default the shared
                cache under heardet's cache directory (as the CLI and the models use it);
                ``None`` neither reads nor writes a cache.
            progress: show a tqdm bar.
            batch_size: arrays handed to the backend at once.
            names: how to call each source in results (default: its path or a byte count).
        """
        cache = resolve_cache(cache)
        results: list[TranscriptResult | None] = [None] * len(sources)
        pending: list[tuple[int, str, str | None, np.ndarray]] = []
        bar = tqdm(total=len(sources), desc=f"transcribe ({self.backend})", unit="clip", disable=not progress)

        def flush() -> None:
            transcripts = self.transcribe_arrays([audio for *_, audio in pending])
            for (index, name, key, _), transcript in zip(pending, transcripts):
                if cache is not None and key is not None:
                    cache.put(key, dataclass_payload(transcript))
                results[index] = TranscriptResult(name, transcript)
            bar.update(len(pending))
            pending.clear()

        for index, source in enumerate(sources):
            name = names[index] if names else None
            try:
                data, default_name = read_source_bytes(source)
                name = name or default_name
                key = cache.key(content_hash(data), self.identity) if cache is not None else None
                payload = cache.get(key) if key is not None else None
                if payload is not None:
                    results[index] = TranscriptResult(name, Transcript.from_payload(payload), cached=True)
                    bar.update(1)
                    continue
                pending.append((index, name, key, decode_audio(data, name)))
            except AudioError as exc:  # in the results; callers report them (the CLI: once, at the end)
                results[index] = TranscriptResult(name or exc.source, None, error=exc.reason)
                logger.debug("skipping %s: %s", name or exc.source, exc.reason)
                bar.update(1)
                continue
            if len(pending) >= batch_size:
                flush()
        if pending:
            flush()
        bar.close()
        return [r for r in results if r is not None]


class FasterWhisperTranscriber(Transcriber):
    """CTranslate2 Whisper through faster-whisper (int8 on CPU by default)."""

    backend = "faster-whisper"

    def __init__(self, model: str = "whisper-base", options: DecodeOptions | None = None, device: str = "auto",
                 compute_type: str = "default", cpu_threads: int = 0):
        super().__init__(model, options)
        from faster_whisper import WhisperModel

        from heardet.whisper.hub import ModelUnavailableError, resolve

        resolved = resolve(model)
        device = resolve_device(device)
        if compute_type == "default":
            compute_type = "int8" if device == "cpu" else "float16"
        if resolved.ct2_dir is not None:
            path = str(resolved.ct2_dir)
        elif model.startswith("whisper-"):
            path = model.removeprefix("whisper-")  # faster-whisper's own name -> Systran conversion
        else:
            raise ModelUnavailableError(
                f"{model!r} has no CTranslate2 form; use backend='transformers' for Hugging Face checkpoints"
            )
        try:
            self._model = WhisperModel(path, device=device, compute_type=compute_type, cpu_threads=cpu_threads)
        except Exception as exc:  # noqa: BLE001 - a download or load failure gets a clear message
            raise ModelUnavailableError(f"cannot load {model!r} with faster-whisper: {exc}") from exc
        self.compute_type = compute_type
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        # What window="content" decodes with: faster-whisper's own tokenizer and suppressed tokens.
        self._tokenizer = Tokenizer(self._model.hf_tokenizer, self._model.model.is_multilingual, task="transcribe",
                                    language=self.options.language)
        self._suppressed = get_suppressed_tokens(self._tokenizer, [-1])

    @property
    def identity(self) -> str:
        return f"{super().identity}|{self.compute_type}"

    def transcribe_arrays(self, audios: Sequence[np.ndarray]) -> list[Transcript]:
        out = []
        opts = self.options
        content = opts.window == "content" and not opts.word_timestamps and not opts.temperature_fallback
        for audio in audios:
            if content and len(audio) <= CONTENT_WINDOW_MAX_S * SAMPLE_RATE:
                out.append(self._transcribe_content(audio))
                continue
            segments, info = self._model.transcribe(
                audio,
                language=opts.language,
                task="transcribe",
                beam_size=opts.beam_size,
                temperature=list(FALLBACK_TEMPERATURES) if opts.temperature_fallback else 0.0,
                condition_on_previous_text=False,
                without_timestamps=not opts.word_timestamps,
                word_timestamps=opts.word_timestamps,
                vad_filter=False,
                max_new_tokens=opts.max_new_tokens(len(audio) / SAMPLE_RATE),
            )
            segments = list(segments)
            words = tuple(
                Word(w.word.strip(), round(w.start, 3), round(w.end, 3), round(w.probability, 4))
                for s in segments for w in (s.words or ())
            )
            text = " ".join(s.text.strip() for s in segments).strip()
            out.append(Transcript(text, info.language or opts.language, round(len(audio) / SAMPLE_RATE, 3), words))
        return out


    def _transcribe_content(self, audio: np.ndarray) -> Transcript:
        """One recording encoded at its own length plus :data:`CONTENT_PAD_S` (``window="content"``), decoded as
        faster-whisper decodes a window: greedy or beam search, its suppressed tokens, and an empty text when
        the window is judged silence (:data:`NO_SPEECH_THRESHOLD`, :data:`LOG_PROB_THRESHOLD`)."""
        opts, whisper, tokenizer = self.options, self._model, self._tokenizer
        features = whisper.feature_extractor(audio)
        frames = features.shape[-1] - 1  # the extractor's last frame is its own padding, as faster-whisper counts
        # zeros past the end, as faster-whisper pads; at most 29 s + 1 s, within Whisper's 3000 frames
        window = np.pad(features[:, :frames], ((0, 0), (0, int(CONTENT_PAD_S * FRAMES_PER_SECOND))))
        prompt = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
        seconds = len(audio) / SAMPLE_RATE
        result = whisper.model.generate(whisper.encode(window), [prompt], beam_size=opts.beam_size,
                                        max_length=len(prompt) + opts.max_new_tokens(seconds), return_scores=True,
                                        return_no_speech_prob=True, suppress_blank=True,
                                        suppress_tokens=self._suppressed)[0]
        tokens = result.sequences_ids[0]
        mean_log_prob = result.scores[0] * len(tokens) / (len(tokens) + 1)  # faster-whisper's average, length penalty 1
        silent = result.no_speech_prob > NO_SPEECH_THRESHOLD and mean_log_prob <= LOG_PROB_THRESHOLD
        text = "" if silent else tokenizer.decode(tokens).strip()
        return Transcript(text, opts.language, round(seconds, 3))


class TransformersTranscriber(Transcriber):
    """Any Hugging Face Whisper through the transformers ASR pipeline."""

    backend = "transformers"

    def __init__(self, model: str = "whisper-base", options: DecodeOptions | None = None, device: str = "auto"):
        super().__init__(model, options)
        import torch
        from transformers import pipeline

        from heardet.whisper.hub import load_whisper

        device = resolve_device(device)
        dtype = torch.float16 if device == "cuda" else torch.float32
        bundle = load_whisper(model, device=device, dtype=dtype)
        self._pipe = pipeline(
            "automatic-speech-recognition",
            model=bundle.model,
            tokenizer=bundle.processor.tokenizer,
            feature_extractor=bundle.processor.feature_extractor,
            chunk_length_s=30,
            device=device,
            dtype=dtype,
        )

    def transcribe_arrays(self, audios: Sequence[np.ndarray]) -> list[Transcript]:
        opts = self.options
        longest = max(len(a) for a in audios) / SAMPLE_RATE
        generate_kwargs = {"language": opts.language, "task": "transcribe", "num_beams": opts.beam_size,
                           "max_new_tokens": opts.max_new_tokens(longest)}
        if opts.temperature_fallback:
            generate_kwargs["temperature"] = FALLBACK_TEMPERATURES
        inputs = [{"raw": audio, "sampling_rate": SAMPLE_RATE} for audio in audios]
        outputs = self._pipe(
            inputs,
            batch_size=len(inputs),
            generate_kwargs=generate_kwargs,
            return_timestamps="word" if opts.word_timestamps else False,
        )
        result = []
        for audio, output in zip(audios, outputs):
            words = tuple(
                Word(c["text"].strip(), float(c["timestamp"][0]), float(c["timestamp"][1] or c["timestamp"][0]))
                for c in output.get("chunks", ()) if opts.word_timestamps
            )
            result.append(Transcript(output["text"].strip(), opts.language, round(len(audio) / SAMPLE_RATE, 3), words))
        return result


def make_transcriber(model: str = "whisper-base", backend: str = "auto", options: DecodeOptions | None = None,
                     device: str = "auto") -> Transcriber:
    """Build a transcriber.

    Args:
        model: a Whisper name (``whisper-base``), a Hugging Face id or a local directory.
        backend: ``faster-whisper``, ``transformers`` or ``auto`` (faster-whisper when the
            model exists in CTranslate2 form and no GPU is used, else transformers).
        options: decoding options.
        device: ``cpu``, ``cuda`` or ``auto``.

    Raises:
        ValueError: unknown backend.
        heardet.whisper.hub.ModelUnavailableError: the model cannot be had (offline).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        from heardet.whisper.hub import resolve

        use_ct2 = resolve(model).ct2_dir is not None and resolve_device(device) == "cpu"
        backend = "faster-whisper" if use_ct2 else "transformers"
    if backend == "faster-whisper":
        return FasterWhisperTranscriber(model, options, device)
    return TransformersTranscriber(model, options, device)


def default_cache() -> TranscriptCache:
    """The shared transcript cache under heardet's cache directory."""
    from heardet.whisper.hub import cache_dir

    return TranscriptCache(cache_dir() / "transcripts")


def resolve_cache(cache: TranscriptCache | _DefaultCache | None) -> TranscriptCache | None:
    """:data:`DEFAULT_CACHE` → :func:`default_cache` (None, with a warning, when its directory
    cannot be made); anything else unchanged."""
    if cache is not DEFAULT_CACHE:
        return cache
    try:
        return default_cache()
    except (OSError, RuntimeError) as exc:  # e.g. no home directory
        logger.warning("transcribing without the transcript cache: %s", exc)
        return None


def transcribe_clips(transcriber: Transcriber, clips: Sequence,
                     cache: TranscriptCache | _DefaultCache | None = DEFAULT_CACHE, progress: bool = True):
    """Transcribe :class:`heardet.data.Clip` objects into a table (through the shared
    transcript cache unless ``cache`` says otherwise, as in :meth:`Transcriber.transcribe`).

    Returns:
        A DataFrame with columns ``id``, ``split``, ``label`` (None when unlabelled),
        ``text`` and ``error``, one row per clip, in the clips' order.
    """
    import pandas as pd

    results = transcriber.transcribe([c.path for c in clips], cache=cache, progress=progress,
                                     names=[f"{c.split}/{c.path.name}" for c in clips])
    return pd.DataFrame({
        "id": [c.id for c in clips],
        "split": [c.split for c in clips],
        "label": pd.array([c.label for c in clips], dtype="Int64"),
        "text": [r.text for r in results],
        "error": [r.error for r in results],
    })
