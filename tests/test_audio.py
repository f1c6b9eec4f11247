import base64
import io

import numpy as np
import pytest
import soundfile as sf

from heardet.audio import SAMPLE_RATE, AudioError, iter_windows, load_audio


@pytest.mark.parametrize("fmt,ext", [("WAV", "wav"), ("FLAC", "flac"), ("OGG", "ogg"), ("MP3", "mp3")])
def test_every_supported_format_loads_as_16k_mono_float32(write_audio, fmt, ext):
    path = write_audio(f"clip.{ext}", seconds=1.0, sr=44_100, channels=2, format=fmt)
    audio = load_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 1, f"{ext}: got {audio.dtype} {audio.shape}"
    assert abs(len(audio) - SAMPLE_RATE) < 0.05 * SAMPLE_RATE, f"{ext}: {len(audio)} samples for 1 s"


def test_resampling_keeps_the_tone_frequency(write_audio):
    audio = load_audio(write_audio("a.wav", seconds=1.0, sr=8_000, freq=1000.0))
    peak_hz = np.argmax(np.abs(np.fft.rfft(audio))) * SAMPLE_RATE / len(audio)
    assert abs(peak_hz - 1000.0) < 5, f"1 kHz tone came out at {peak_hz} Hz"


def test_bytes_and_base64_text_load_like_the_file(write_audio):
    path = write_audio("a.wav")
    raw = path.read_bytes()
    expected = load_audio(path)
    np.testing.assert_allclose(load_audio(raw), expected)
    np.testing.assert_allclose(load_audio(base64.b64encode(raw).decode()), expected)
    np.testing.assert_allclose(load_audio(base64.b64encode(raw)), expected)  # base64 still in bytes


def test_file_uri_loads(write_audio):
    path = write_audio("a.wav")
    assert len(load_audio(f"file://{path}")) == SAMPLE_RATE


@pytest.mark.parametrize(
    "payload,reason",
    [(b"", "empty"), (b"this is not audio at all" * 10, "not audio"), ("no/such/file.wav", "no such file")],
)
def test_bad_input_names_the_reason(payload, reason):
    with pytest.raises(AudioError, match=reason):
        load_audio(payload)


def test_silent_and_zero_length_files_are_reported(tmp_path):
    silent, empty = tmp_path / "silent.wav", tmp_path / "empty.wav"
    sf.write(silent, np.zeros(16_000, dtype=np.float32), 16_000)
    sf.write(empty, np.zeros(0, dtype=np.float32), 16_000)
    with pytest.raises(AudioError, match="silent") as info:
        load_audio(silent)
    assert str(silent) in str(info.value), "the error must name the file"
    with pytest.raises(AudioError, match="zero length|too short"):
        load_audio(empty)
    assert load_audio(silent, allow_silent=True).shape == (16_000,)


def test_thirty_minute_recording_loads_and_windows_cover_it(tmp_path):
    sr = 8_000
    path = tmp_path / "call.flac"
    sf.write(path, np.random.default_rng(0).normal(0, 0.1, 30 * 60 * sr).astype(np.float32), sr)
    audio = load_audio(path)
    assert len(audio) == 30 * 60 * SAMPLE_RATE
    windows = list(iter_windows(audio, window_s=30.0, hop_s=20.0))
    assert windows[0].start_s == 0.0 and windows[-1].end_s == pytest.approx(30 * 60)
    gaps = [b.start_s - a.end_s for a, b in zip(windows, windows[1:])]
    assert max(gaps) < 0, "consecutive windows must overlap"


def test_short_audio_is_one_window():
    audio = np.ones(SAMPLE_RATE, dtype=np.float32)
    assert [w.index for w in iter_windows(audio, 30.0)] == [0]


def test_raw_bytes_from_memory_buffer():
    buf = io.BytesIO()
    sf.write(buf, np.full(8000, 0.1, dtype=np.float32), 8000, format="WAV")
    assert len(load_audio(buf.getvalue())) == SAMPLE_RATE


@pytest.mark.parametrize("content,reason", [
    (b"hello, I am a text file\n", "not audio: starts with text 'hello, I am a text file'"),
    (b"RIFF\x24\x00\x00\x00WAVEfmt ", "corrupt or truncated WAV audio"),
    (bytes(range(256)) * 4, "not audio, or an unsupported or corrupt audio format (first bytes 00 01 02"),
])
def test_a_file_that_is_not_audio_is_told_what_is_wrong_with_its_content(tmp_path, content, reason):
    path = tmp_path / "x.wav"  # the extension is right; the content is not
    path.write_bytes(content)
    with pytest.raises(AudioError) as info:
        load_audio(path)
    assert info.value.reason.startswith(reason), info.value.reason
    assert "expected .wav" not in info.value.reason
