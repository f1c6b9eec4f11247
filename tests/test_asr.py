"""Transcription: both backends on tiny random Whisper models (real code paths, noise
text), and the transcript cache on a fake transcriber that counts its calls."""

import json

import pytest
from conftest import FakeTranscriber
from ct2_fixture import write_tiny_ct2

from heardet.whisper.asr import DecodeOptions, Transcriber, Transcript, make_transcriber
from heardet.whisper.cache import TranscriptCache


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory):
    """A tiny random Whisper with 30 s windows, in CTranslate2 (ct2_dir) and HF (ct2_dir/../hf) form."""
    from transformers import WhisperFeatureExtractor

    tiny = write_tiny_ct2(tmp_path_factory.mktemp("tiny"), source_positions=1500, target_positions=448)
    WhisperFeatureExtractor(feature_size=tiny.n_mels).save_pretrained(tiny.ct2_dir.parent / "hf")
    return tiny


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HEARDET_CACHE", str(tmp_path / "cache"))


@pytest.mark.parametrize("backend", ["faster-whisper", "transformers"])
def test_each_backend_transcribes_a_batch_and_reports_the_broken_file(backend, tiny_whisper, write_audio, tmp_path):
    model = str(tiny_whisper.ct2_dir if backend == "faster-whisper" else tiny_whisper.ct2_dir.parent / "hf")
    transcriber = make_transcriber(model, backend, DecodeOptions(language="ru"))
    assert transcriber.backend == backend
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"nope")
    results = transcriber.transcribe([write_audio("a.wav"), broken, write_audio("b.wav", seconds=2.0)],
                                     progress=False)
    assert [bool(r.error) for r in results] == [False, True, False]
    assert isinstance(results[0].transcript, Transcript)  # text is noise: the weights are random
    assert results[2].transcript.duration_s == pytest.approx(2.0)
    assert "broken.wav" in results[1].source and "not audio" in results[1].error


def test_auto_backend_prefers_faster_whisper_for_ctranslate2_models(tiny_whisper):
    assert make_transcriber(str(tiny_whisper.ct2_dir), "auto").backend == "faster-whisper"
    assert make_transcriber(str(tiny_whisper.ct2_dir.parent / "hf"), "auto").backend == "transformers"


def test_recordings_longer_than_a_window_are_transcribed(tiny_whisper, write_audio):
    transcriber = make_transcriber(str(tiny_whisper.ct2_dir), "faster-whisper")
    [result] = transcriber.transcribe([write_audio("long.wav", seconds=75.0)], progress=False)
    assert result.error == "" and result.transcript.duration_s == pytest.approx(75.0)


@pytest.mark.parametrize("window,seconds,width", [("content", 2.0, 300), ("30s", 2.0, 3000), ("content", 40.0, 3000)])
def test_faster_whisper_encodes_a_short_recording_at_its_own_length_unless_told_30s(tiny_whisper, write_audio,
                                                                                      window, seconds, width):
    transcriber = make_transcriber(str(tiny_whisper.ct2_dir), "faster-whisper", DecodeOptions(window=window))
    widths, encode = [], transcriber._model.encode
    transcriber._model.encode = lambda features: widths.append(features.shape[-1]) or encode(features)
    [result] = transcriber.transcribe([write_audio("a.wav", seconds=seconds)], cache=None, progress=False)
    assert result.error == "" and result.transcript.duration_s == pytest.approx(seconds)
    assert widths and set(widths) == {width}, widths  # 2 s is 200 log-mel frames, plus 1 s of silence


def test_unknown_backend_and_bad_options_are_refused():
    with pytest.raises(ValueError, match="backend must be one of"):
        make_transcriber("whisper-base", "kaldi")
    with pytest.raises(ValueError, match="beam_size"):
        DecodeOptions(beam_size=0)
    with pytest.raises(ValueError, match="window"):
        DecodeOptions(window="10s")


def test_cache_serves_repeats_and_keys_on_decoding_options(write_audio, tmp_path):
    cache = TranscriptCache(tmp_path / "c")
    clips = [write_audio("a.wav", freq=300), write_audio("b.wav", freq=600)]
    fake = FakeTranscriber()
    first = fake.transcribe(clips, cache=cache, progress=False)
    second = fake.transcribe(clips, cache=cache, progress=False)
    assert fake.calls == 2 and [r.cached for r in second] == [True, True]
    assert [r.text for r in first] == [r.text for r in second]
    greedy, beam = Transcriber("m", DecodeOptions()), Transcriber("m", DecodeOptions(beam_size=5))
    assert TranscriptCache.key("h", greedy.identity) != TranscriptCache.key("h", beam.identity)


def test_a_corrupt_cache_entry_is_recomputed_not_used(write_audio, tmp_path, caplog):
    cache = TranscriptCache(tmp_path / "c")
    clip = write_audio("a.wav", freq=300)
    fake = FakeTranscriber()
    fake.transcribe([clip], cache=cache, progress=False)
    [entry] = list((tmp_path / "c").rglob("*.json"))
    tampered = json.loads(entry.read_text())
    tampered["payload"]["text"] = "подмена"
    entry.write_text(json.dumps(tampered))
    [again] = fake.transcribe([clip], cache=cache, progress=False)
    assert again.text != "подмена" and not again.cached and fake.calls == 2
    assert cache.corrupt == 1 and "corrupt" in caplog.text
    entry.write_text("{ truncated")
    [third] = fake.transcribe([clip], cache=cache, progress=False)
    assert third.text == again.text and fake.calls == 3


def test_same_audio_bytes_share_one_cache_entry(write_audio, tmp_path):
    cache = TranscriptCache(tmp_path / "c")
    clip = write_audio("a.wav", freq=300)
    fake = FakeTranscriber()
    fake.transcribe([clip], cache=cache, progress=False)
    [by_bytes] = fake.transcribe([clip.read_bytes()], cache=cache, progress=False)
    assert by_bytes.cached and fake.calls == 1, "a path and the same bytes are one clip"
    assert len(list((tmp_path / "c").rglob("*.json"))) == 1


def test_a_library_transcriber_uses_the_shared_cache_unless_told_not_to(tiny_whisper, write_audio, tmp_path):
    transcriber = make_transcriber(str(tiny_whisper.ct2_dir), "faster-whisper")
    clip = write_audio("a.wav")
    [first] = transcriber.transcribe([clip], progress=False)
    [second] = transcriber.transcribe([clip], progress=False)
    assert not first.cached and second.cached and second.text == first.text
    assert list((tmp_path / "cache" / "transcripts").rglob("*.json")), "the entry lies in heardet's cache directory"
    [uncached] = transcriber.transcribe([clip], cache=None, progress=False)
    assert not uncached.cached, "cache=None neither reads nor writes the cache"
