"""Load any readable audio to 16 kHz mono float32, and cut long audio into windows.

Every approach sees audio through :func:`load_audio`, so a file that one approach can read
every approach can read, and a file that cannot be read fails with the same
:class:`AudioError` naming the source and the reason.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16_000  # Hz; what Whisper's feature extractor expects
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
SILENCE_PEAK = 1e-4  # peak absolute amplitude (full scale 1.0) below which a clip is "silent"
MIN_SAMPLES = 160  # 10 ms at 16 kHz: anything shorter is treated as empty
REMOTE_PREFIXES = ("runs:/", "models:/")  # MLflow URIs without "://"

AudioSource = Union[str, os.PathLike, bytes, bytearray, memoryview]


class AudioError(ValueError):
    """Audio that cannot be used, with the source it came from and why.

    Attributes:
        source: a short, human-readable name of the input (file path or ``<bytes …>``).
        reason: what was wrong, e.g. ``"not audio"``, ``"empty"``, ``"silent"``.
    """

    def __init__(self, source: str, reason: str):
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


@dataclass(frozen=True)
class Window:
    """A slice of a longer recording: ``audio`` starts ``start_s`` seconds into it."""

    index: int
    start_s: float
    audio: np.ndarray

    @property
    def end_s(self) -> float:
        return self.start_s + len(self.audio) / SAMPLE_RATE


def describe_source(source: AudioSource) -> str:
    """A short name for ``source`` that is safe to put in an error message."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    text = os.fspath(source)
    if len(text) > 200:
        return f"<{len(text)} characters of text>"
    return text


def decode_base64(text: str, source: str = "<base64 text>") -> bytes:
    """Decode base64 text (standard or URL-safe alphabet, padding optional) to bytes."""
    cleaned = "".join(text.split())
    if cleaned.startswith("data:") and "," in cleaned:  # data URI: data:audio/wav;base64,....
        cleaned = cleaned.split(",", 1)[1]
    cleaned += "=" * (-len(cleaned) % 4)
    try:
        if "-" in cleaned or "_" in cleaned:
            return base64.urlsafe_b64decode(cleaned)
        return base64.b64decode(cleaned, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise AudioError(source, f"not valid base64 text ({exc})") from None


def read_source_bytes(source: AudioSource) -> tuple[bytes, str]:
    """Return the raw bytes of ``source`` and a name for it.

    ``source`` may be a path, a ``file://`` URI, any URI MLflow can download
    (``s3://``, ``runs:/``, ...), raw bytes, or base64 text.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        # The pyfunc contract lets a client send base64 that arrives still encoded.
        if data[:4] not in (b"RIFF", b"fLaC", b"OggS", b"ID3\x03", b"ID3\x04") and _looks_base64(data):
            data = decode_base64(data.decode("ascii"), describe_source(source))
        return data, describe_source(source)
    text = os.fspath(source)
    name = describe_source(text)
    if text.startswith("file://"):
        text = text[len("file://"):]
    elif is_remote(text):
        import mlflow  # only needed for remote URIs

        try:
            text = mlflow.artifacts.download_artifacts(artifact_uri=text)
        except Exception as exc:  # noqa: BLE001 - any download failure becomes an AudioError
            raise AudioError(name, f"could not download ({exc})") from None
    if len(text) > 64 and _looks_base64(text.encode("ascii", "ignore")) and not os.path.exists(text[:4096]):
        return decode_base64(text, "<base64 text>"), "<base64 text>"
    path = Path(text)
    try:
        if path.is_file():
            return path.read_bytes(), name
        if path.is_dir():
            raise AudioError(name, "is a directory, expected an audio file")
    except OSError as exc:  # e.g. a name too long to be a path
        raise AudioError(name, f"cannot be read ({exc.strerror or exc})") from None
    raise AudioError(name, "no such file")


def is_remote(text: str) -> bool:
    """Whether ``text`` names a URI that MLflow downloads (``s3://…``, ``runs:/…``), not a local file."""
    return not text.startswith("file://") and ("://" in text[:32] or text.startswith(REMOTE_PREFIXES))


def _looks_base64(data: bytes) -> bool:
    head = data[:4096].strip()
    if not head:
        return False
    allowed = set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_\r\n")
    return all(ch in allowed for ch in head)


def _decode(data: bytes, name: str) -> tuple[np.ndarray, int]:
    """Decode bytes to (samples [n] or [n, channels], sample rate)."""
    import soundfile as sf

    if not data:
        raise AudioError(name, "empty (0 bytes)")
    try:
        samples, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=False)
        return samples, int(sr)
    except Exception as sf_exc:  # noqa: BLE001 - try the slower, broader decoder next
        first_error = str(sf_exc).rsplit(": ", 1)[-1].strip() or type(sf_exc).__name__  # drop object reprs
    try:  # librosa's audioread fallback covers formats libsndfile lacks (via ffmpeg)
        import librosa

        samples, sr = librosa.load(io.BytesIO(data), sr=None, mono=False, dtype=np.float32)
        return (samples.T if samples.ndim == 2 else samples), int(sr)
    except Exception:  # noqa: BLE001
        pass
    raise AudioError(name, what_is_wrong(data, first_error))


AUDIO_SIGNATURES = {  # leading bytes of the formats heardet reads
    b"RIFF": "WAV", b"RIFX": "WAV", b"fLaC": "FLAC", b"OggS": "Ogg", b"ID3": "MP3",
}


def what_is_wrong(data: bytes, decoder_error: str) -> str:
    """Why bytes that no decoder accepted are not usable audio, judged from their content
    (a file's extension says nothing about it)."""
    if "does not exist" in decoder_error:  # libsndfile's words for an in-memory stream it cannot place
        decoder_error = "format not recognised"
    head = data[:64]
    for signature, kind in AUDIO_SIGNATURES.items():
        if head.startswith(signature):
            return f"corrupt or truncated {kind} audio ({decoder_error})"
    text = _as_text(data)
    if text is not None:
        start = " ".join(text.split())[:40]
        return f"not audio: starts with text {start!r}"
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:  # an MPEG frame sync, or chance
        return "not audio, or corrupt MP3 audio (starts like an MP3 frame, but no frame decodes)"
    return f"not audio, or an unsupported or corrupt audio format (first bytes {head[:8].hex(' ')})"


def _as_text(data: bytes) -> str | None:
    """The start of ``data`` as text when it reads as UTF-8 (or BOM-marked UTF-16) text, else None."""
    head = data[:4096]
    encoding = "utf-16" if head[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-8"
    text = head.decode(encoding, errors="replace")
    text = text[:-1] if len(data) > 4096 else text  # the cut may have split a character
    if text.strip() and all((ch.isprintable() or ch.isspace()) and ch != "\ufffd" for ch in text):
        return text
    return None


def to_mono(samples: np.ndarray) -> np.ndarray:
    """Average the channels of a [n, channels] array; a 1-D array is returned unchanged."""
    if samples.ndim == 2:
        return samples.mean(axis=1, dtype=np.float32)
    return samples


def resample(audio: np.ndarray, orig_sr: int, target_sr: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited resampling with soxr (high quality); a no-op when the rates match."""
    if orig_sr == target_sr:
        return audio.astype(np.float32, copy=False)
    import soxr

    return soxr.resample(audio, orig_sr, target_sr, quality="HQ").astype(np.float32, copy=False)


def load_audio(source: AudioSource, sample_rate: int = SAMPLE_RATE, allow_silent: bool = False) -> np.ndarray:
    """Load ``source`` as mono float32 at ``sample_rate``.

    Args:
        source: a file path, ``file://`` or other MLflow-downloadable URI, raw bytes of an
            audio file, or base64 text of one. wav, flac, ogg and mp3 at any sample rate,
            mono or multi-channel, are accepted.
        sample_rate: target rate in Hz.
        allow_silent: accept a clip whose peak amplitude is below ``SILENCE_PEAK``.

    Returns:
        A 1-D float32 array.

    Raises:
        AudioError: the source is missing, not audio, empty, zero length or silent; the
            message names the source.
    """
    data, name = read_source_bytes(source)
    return decode_audio(data, name, sample_rate, allow_silent)


def decode_audio(data: bytes, name: str, sample_rate: int = SAMPLE_RATE, allow_silent: bool = False) -> np.ndarray:
    """Decode the bytes of an audio file, already read, as :func:`load_audio` does.

    ``name`` is what an :class:`AudioError` calls the source.
    """
    samples, sr = _decode(data, name)
    if samples.size == 0 or samples.shape[0] == 0:
        raise AudioError(name, "zero length (no samples)")
    audio = resample(to_mono(samples), sr, sample_rate)
    if len(audio) < MIN_SAMPLES * sample_rate // SAMPLE_RATE:
        raise AudioError(name, f"too short ({len(audio)} samples at {sample_rate} Hz)")
    if not np.all(np.isfinite(audio)):
        raise AudioError(name, "contains NaN or infinite samples")
    if not allow_silent and float(np.max(np.abs(audio))) < SILENCE_PEAK:
        raise AudioError(name, f"silent (peak amplitude below {SILENCE_PEAK})")
    return audio


def audio_info(path: str | os.PathLike) -> tuple[float, int, int]:
    """(duration in seconds, native sample rate, channels) read from the header, without decoding."""
    import soundfile as sf

    try:
        info = sf.info(os.fspath(path))
        return info.frames / info.samplerate, int(info.samplerate), int(info.channels)
    except Exception:  # noqa: BLE001 - fall back to a full decode for formats without a header
        data, name = read_source_bytes(path)
        samples, sr = _decode(data, name)
        channels = 1 if samples.ndim == 1 else samples.shape[1]
        return samples.shape[0] / sr, sr, channels


def iter_windows(audio: np.ndarray, window_s: float, hop_s: float | None = None) -> Iterator[Window]:
    """Cut ``audio`` (at ``SAMPLE_RATE``) into windows of ``window_s`` seconds.

    Windows overlap by ``window_s - hop_s`` seconds (default hop: three quarters of the
    window), so a phrase shorter than the overlap always lies whole inside one window.
    The last window is aligned to the end of the audio; audio shorter than one window
    yields a single window holding all of it.
    """
    if window_s <= 0:
        raise ValueError(f"window_s must be > 0, got {window_s}")
    hop_s = window_s * 0.75 if hop_s is None else hop_s
    if not 0 < hop_s <= window_s:
        raise ValueError(f"hop_s must be in (0, window_s={window_s}], got {hop_s}")
    size = int(round(window_s * SAMPLE_RATE))
    hop = int(round(hop_s * SAMPLE_RATE))
    total = len(audio)
    if total <= size:
        yield Window(0, 0.0, audio)
        return
    starts = list(range(0, total - size + 1, hop))
    if starts[-1] + size < total:
        starts.append(total - size)
    for index, start in enumerate(starts):
        yield Window(index, start / SAMPLE_RATE, audio[start : start + size])


def write_wav(path: str | os.PathLike, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write float audio as 16-bit PCM WAV, clipping to [-1, 1]."""
    import soundfile as sf

    sf.write(os.fspath(path), np.clip(audio, -1.0, 1.0), sample_rate, subtype="PCM_16")
