"""The bad-input table: audio files that are broken, odd or merely unusual, and cells and requests
that are malformed, each with what heardet must answer. ``test_bad_inputs`` runs it against
``heardet predict``, the pyfunc and a real served model."""

from __future__ import annotations

import base64
import gzip
import io
import struct
import zipfile
import zlib
from dataclasses import dataclass

import numpy as np
import soundfile as sf

SR = 16_000
SCORED = "scored"  # label 0 or 1, no error


@dataclass(frozen=True)
class Case:
    """One input and what it must get: ``SCORED``, or a row error containing one of ``expect``'s words.

    ``data`` is a whole audio file's bytes (every surface), or ``cell`` a raw cell value (pyfunc
    and served only: the CLI takes files).
    """

    name: str
    expect: tuple[str, ...]
    data: bytes | None = None
    cell: object = None


def speech_like(seconds: float = 1.5, sr: int = SR, channels: int = 1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    tone = 0.2 * np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    audio = (tone + 0.01 * rng.standard_normal(len(t))).astype(np.float32)
    return audio if channels == 1 else np.stack([audio * (0.5 + c / channels) for c in range(channels)], axis=1)


def encode(audio: np.ndarray, sr: int = SR, format: str = "WAV", subtype: str | None = None) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio, sr, format=format, subtype=subtype)
    return buf.getvalue()


def float_wav_with(value: float) -> bytes:
    audio = speech_like()
    audio[100:110] = value
    return encode(audio, subtype="FLOAT")


def png() -> bytes:
    raw = b"\x00\xff\x00\x00"
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def zip_file() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("clip.wav", encode(speech_like()))
    return buf.getvalue()


def file_cases() -> list[Case]:
    wav = encode(speech_like())
    not_audio = ("not audio", "unsupported or corrupt")
    return [
        Case("zero bytes", ("empty", "no audio"), b""),
        Case("truncated WAV header", ("corrupt or truncated WAV",), wav[:20]),
        Case("WAV data chunk claiming more than it has", (SCORED,), wav[: len(wav) // 2]),
        Case("WAV header only, no samples", ("zero length", "too short"), encode(np.zeros(0, np.float32))),
        Case("NaN samples", ("NaN or infinite",), float_wav_with(np.nan)),
        Case("infinite samples", ("NaN or infinite",), float_wav_with(np.inf)),
        Case("one sample", ("too short",), encode(np.array([0.5], np.float32))),
        Case("10 minutes of digital silence", ("silent",), encode(np.zeros(600 * 8000, np.int16), 8000,
                                                                   subtype="PCM_16")),
        Case("quieter than the silence floor", ("silent",), encode(speech_like() * 2e-4)),
        Case("96 kHz, 6 channels", (SCORED,), encode(speech_like(1.0, 96_000, 6), 96_000)),
        Case("8-bit unsigned PCM", (SCORED,), encode(speech_like(), subtype="PCM_U8")),
        Case("32-bit integer PCM", (SCORED,), encode(speech_like(), subtype="PCM_32")),
        Case("float64 samples", (SCORED,), encode(speech_like().astype(np.float64), subtype="DOUBLE")),
        Case("8 kHz telephone band", (SCORED,), encode(speech_like(2.0, 8000), 8000)),
        Case("stereo, one channel silent", (SCORED,), encode(speech_like(2.0, channels=2) * [1.0, 0.0])),
        Case("clipped square wave", (SCORED,), encode(np.sign(speech_like()).astype(np.float32))),
        Case("FLAC", (SCORED,), encode(speech_like(), format="FLAC")),
        Case("FLAC cut in half", (SCORED, "corrupt or truncated FLAC"), encode(speech_like(3.0), format="FLAC")[:6000]),
        Case("Ogg Vorbis", (SCORED,), encode(speech_like(), format="OGG", subtype="VORBIS")),
        Case("Ogg Opus", (SCORED,), encode(speech_like(2.0, 48_000), 48_000, format="OGG", subtype="OPUS")),
        Case("MP3", (SCORED,), encode(speech_like(2.0, 44_100), 44_100, format="MP3")),
        Case("MP3 that is only an ID3 tag", ("corrupt or truncated MP3",),
             b"ID3\x04\x00\x00\x00\x00\x00\x0a" + b"\x00" * 10),
        Case("AIFF", (SCORED,), encode(speech_like(), format="AIFF")),
        Case("text named .wav", ("not audio: starts with text",), "не слышу, это текст\n".encode() * 10),
        Case("HTML page", ("not audio: starts with text",), b"<!doctype html><html><body>404</body></html>"),
        Case("JSON document", ("not audio: starts with text",), b'{"audio": "clip.wav"}'),
        Case("zip archive named .wav", not_audio, zip_file()),
        Case("PNG image named .wav", not_audio, png()),
        Case("gzip stream", not_audio, gzip.compress(wav)),
        Case("ELF executable header", not_audio, b"\x7fELF\x02\x01\x01" + b"\x00" * 57),
        Case("random bytes", not_audio, np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes()),
        Case("UTF-16 text", not_audio + ("starts with text",), "hello world".encode("utf-16")),
    ]


def cell_cases() -> list[Case]:
    wav = encode(speech_like())
    b64 = base64.b64encode(wav).decode()
    return [
        Case("standard base64", (SCORED,), cell=b64),
        Case("URL-safe base64 without padding", (SCORED,), cell=base64.urlsafe_b64encode(wav).decode().rstrip("=")),
        Case("data URI", (SCORED,), cell="data:audio/wav;base64," + b64),
        Case("base64 wrapped at 76 columns", (SCORED,), cell=base64.encodebytes(wav).decode()),
        Case("invalid base64", ("not valid base64",), cell="@@@ this is not base64 @@@"),
        Case("base64 of text", ("not audio",), cell=base64.b64encode(b"hello, not a clip").decode()),
        Case("a server path in the audio column", ("base64",), cell="/etc/hostname"),
        Case("null cell", ("no audio",), cell=None),
        Case("NaN cell", ("no audio",), cell=float("nan")),
        Case("empty string", ("no audio",), cell=""),
        Case("a number where bytes belong", ("holds int",), cell=12345),
        Case("a list where bytes belong", ("holds list",), cell=[1, 2, 3]),
        Case("an object where bytes belong", ("holds dict",), cell={"bytes": b64[:8]}),
        Case("true where bytes belong", ("holds bool",), cell=True),
    ]
