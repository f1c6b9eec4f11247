"""Approach 3: the Whisper encoder classifier, on a tiny random Whisper saved to tmp_path."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from heardet.approaches.finetune.features import pad_states
from heardet.approaches.finetune.model import (
    META_FILE,
    EncoderClassifier,
    collate,
    load_classifier,
    log_mel,
    masked_mean,
    predict_audio,
    predict_proba,
    save_classifier,
)
from heardet.approaches.finetune.train import (
    FinetuneConfig,
    LabelledAudio,
    cross_validate,
    encoder_states,
    fit,
    training_crop,
)
from heardet.audio import SAMPLE_RATE
from heardet.cv import best_threshold

BURST_HZ = 1000.0


@pytest.fixture(scope="module")
def tiny_whisper(tiny_hf_whisper) -> Path:
    """The random 2+2-layer Whisper (d_model 32) of conftest, saved offline with its feature extractor."""
    return tiny_hf_whisper


def tiny_factory(root: Path):
    """An ``encoder_factory`` that loads the tiny Whisper directly (no whisper_hub, no hub)."""
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    def factory(name: str, dropout: float):
        whisper = WhisperForConditionalGeneration.from_pretrained(root)
        return EncoderClassifier.from_pretrained(whisper, dropout), WhisperFeatureExtractor.from_pretrained(root)

    return factory


@pytest.fixture
def tiny_model(tiny_whisper):
    torch.manual_seed(1)
    model, fe = tiny_factory(tiny_whisper)("tiny", 0.2)
    return model.eval(), fe


def noise(seconds: float, seed: int, amp: float = 0.05) -> np.ndarray:
    return (amp * np.random.default_rng(seed).normal(size=int(seconds * SAMPLE_RATE))).astype(np.float32)


def with_burst(audio: np.ndarray, start_s: float, length_s: float = 0.5) -> np.ndarray:
    out = audio.copy()
    begin, n = int(start_s * SAMPLE_RATE), int(length_s * SAMPLE_RATE)
    out[begin : begin + n] += 0.5 * np.sin(2 * np.pi * BURST_HZ * np.arange(n) / SAMPLE_RATE).astype(np.float32)
    return out


def test_forward_accepts_clips_of_different_lengths(tiny_model):
    model, fe = tiny_model
    feats, lengths = collate([log_mel(fe, noise(s, i)) for i, s in enumerate((0.3, 1.0, 2.7))])
    assert lengths.tolist() == [30, 100, 270], "one mel frame per 10 ms, no padding to 30 s"
    with torch.no_grad():
        logits = model(feats, lengths)
    assert logits.shape == (3, 2) and torch.isfinite(logits).all()


def test_padding_a_clip_in_a_batch_does_not_change_its_score(tiny_model):
    model, fe = tiny_model
    short, long = noise(1.23, 0), noise(4.0, 1)
    alone = predict_proba(model, fe, [short], batch_size=1)
    batched = predict_proba(model, fe, [short, long], batch_size=2)
    np.testing.assert_allclose(batched[0], alone[0], atol=1e-5, err_msg="padding to a longer clip moved the score")
    assert 0.0 <= alone[0] <= 1.0


def test_masked_pooling_ignores_padded_frames():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, -100.0]]])
    valid = torch.tensor([[True, True, False]])
    assert torch.allclose(masked_mean(hidden, valid), torch.tensor([[2.0, 3.0]]))


def test_encoder_hidden_states_match_with_and_without_padding(tiny_model):
    model, fe = tiny_model
    feats = log_mel(fe, noise(0.77, 3))  # 77 frames: odd, so conv2's last output straddles the end
    alone, _ = model.encode(*collate([feats]))
    padded, valid = model.encode(*collate([feats, log_mel(fe, noise(2.0, 4))]))
    n = alone.shape[1]
    assert int(valid[0].sum()) == n == 39
    torch.testing.assert_close(padded[0, :n], alone[0], atol=1e-5, rtol=1e-5)


def make_clips(n: int = 12, seconds: float = 1.5):
    """Half positives (a 1 kHz burst at a varying place), half plain noise; bounds for positives."""
    audios, labels, bounds = [], [], []
    for i in range(n):
        base = noise(seconds + 0.1 * (i % 3), seed=100 + i)
        if i % 2 == 0:
            start = 0.2 + 0.1 * (i % 4)
            audios.append(with_burst(base, start))
            bounds.append(((start, start + 0.5),))
        else:
            audios.append(base)
            bounds.append(())
        labels.append(int(i % 2 == 0))
    return audios, labels, bounds


def test_two_fold_cross_validation_returns_fold_scores_and_oof_probabilities(tiny_whisper):
    audios, labels, bounds = make_clips()
    config = FinetuneConfig(model="tiny", n_folds=2, epochs=2, batch_size=4, head_lr=1e-2, max_seconds=1.0,
                            device="cpu", augment=True)
    steps, folds = [], []
    result = cross_validate(LabelledAudio.from_arrays(audios, labels, bounds), config,
                            encoder_factory=tiny_factory(tiny_whisper), progress=False,
                            on_step=lambda f, s, loss: steps.append((f, s, loss)),
                            on_fold=lambda f, loss, scores: folds.append((f, loss, scores.macro_f1))).result
    assert len(result.fold_scores) == 2
    assert result.oof_score.shape == (12,) and np.all((result.oof_score >= 0) & (result.oof_score <= 1))
    assert [f for f, _, _ in folds] == [0, 1] and len(result.extra["seconds"]) == 2
    assert steps and {f for f, _, _ in steps} == {0, 1} and all(np.isfinite(loss) for _, _, loss in steps)
    assert 0.0 <= result.threshold <= 1.0


def test_the_threshold_is_the_configured_one_unless_minus_one_asks_for_the_out_of_fold_choice(tiny_whisper):
    audios, labels, bounds = make_clips(8)
    examples = LabelledAudio.from_arrays(audios, labels, bounds)
    config = FinetuneConfig(model="tiny", n_folds=2, epochs=1, batch_size=4, encoder_lr=0.0, head_lr=1e-2,
                            max_seconds=1.0, device="cpu")
    factory = tiny_factory(tiny_whisper)
    fixed = cross_validate(examples, dataclasses.replace(config, threshold=0.7), factory, progress=False)
    assert fixed.result.threshold == 0.7
    assert fit(examples, dataclasses.replace(config, threshold=0.7), factory, progress=False).threshold == 0.7
    chosen = cross_validate(examples, dataclasses.replace(config, threshold=-1), factory, progress=False)
    assert chosen.result.threshold == best_threshold(examples.labels, chosen.result.oof_score)
    assert fit(examples, dataclasses.replace(config, threshold=-1), factory, cv=chosen,
               progress=False).threshold == chosen.result.threshold


def test_best_fold_refit_returns_a_fold_model(tiny_whisper):
    audios, labels, bounds = make_clips(8)
    config = FinetuneConfig(model="tiny", n_folds=2, batch_size=4, device="cpu", refit="best_fold",
                            freeze_encoder_steps=1)
    factory = tiny_factory(tiny_whisper)
    examples = LabelledAudio.from_arrays(audios, labels, bounds)
    cv = cross_validate(examples, config, factory, progress=False)
    fitted = fit(examples, config, factory, cv=cv, progress=False)
    assert fitted.fold == cv.result.extra["best_fold"][0] and fitted.threshold == cv.result.threshold


def test_save_then_load_gives_identical_scores(tiny_whisper, tmp_path):
    audios, labels, bounds = make_clips(6)
    config = FinetuneConfig(model="tiny", n_folds=2, batch_size=3, device="cpu", max_seconds=2.0)
    fitted = fit(LabelledAudio.from_arrays(audios, labels, bounds), config, tiny_factory(tiny_whisper),
                 threshold=0.4, progress=False)
    before = predict_audio(fitted.model, fitted.feature_extractor, audios, 2.0, 4, 0.4)
    save_classifier(fitted.model, fitted.feature_extractor, config, fitted.threshold, tmp_path / "clf")
    loaded = load_classifier(tmp_path / "clf")
    after = loaded.predict(audios, batch_size=4)
    assert loaded.threshold == 0.4 and loaded.max_seconds == 2.0
    assert loaded.meta["finetune_config"]["model"] == "tiny"
    np.testing.assert_allclose([s.score for s in after], [s.score for s in before], atol=1e-6)
    assert [s.label for s in after] == [s.label for s in before]


def test_loading_a_directory_without_weights_names_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_classifier(tmp_path)


def test_windowed_scoring_finds_the_window_with_the_burst(tiny_whisper):
    """A stand-in model whose score is how loud the burst's mel band gets: the best window must hold the burst."""
    _, fe = tiny_factory(tiny_whisper)("tiny", 0.0)
    peak_freq = fe.mel_filters.argmax(axis=0) * SAMPLE_RATE / fe.n_fft  # mel bin -> its peak frequency, Hz
    burst_bin = int(np.argmin(np.abs(peak_freq - BURST_HZ)))

    class BurstDetector:  # duck-types EncoderClassifier with a score we control
        max_frames, device, training = 3000, torch.device("cpu"), False

        def eval(self):
            return self

        def train(self, mode=True):
            return self

        def encode(self, feats, lengths):
            valid = torch.arange(feats.shape[-1])[None, :] < lengths[:, None]
            return feats, valid

        def classify(self, feats, valid):
            peak = torch.stack([feats[i, burst_bin, : int(n)].max() for i, n in enumerate(valid.sum(dim=1))])
            return torch.stack([torch.zeros_like(peak), 8 * (peak - 0.5)], dim=1), None

    recording, quiet = with_burst(noise(60.0, 7), start_s=41.0), noise(60.0, 9)
    found, other = predict_audio(BurstDetector(), fe, [recording, quiet], max_seconds=10.0, batch_size=4)
    assert found.start_s <= 41.0 and found.end_s >= 41.5, f"best window {found} misses the burst at 41 s"
    assert found.window > 0 and found.end_s - found.start_s == pytest.approx(10.0)
    assert other.score < found.score, "a recording without the burst scored as high"


def test_training_crop_of_a_long_positive_keeps_its_phrase():
    audio, rng = np.arange(30 * SAMPLE_RATE, dtype=np.float64), np.random.default_rng(0)  # sample value = index
    for _ in range(20):
        crop = training_crop(audio, 1, ((22.0, 23.0),), 5.0, rng)
        start = crop[0] / SAMPLE_RATE
        assert len(crop) == 5 * SAMPLE_RATE and start <= 22.0 and start + 5.0 >= 23.0


@pytest.mark.parametrize("field, value", [("n_folds", 1), ("refit", "last"), ("max_seconds", 45.0),
                                          ("device", "tpu"), ("dropout", 1.0), ("augment", "yes"),
                                          ("threshold", 0.0), ("threshold", 1.0), ("threshold", -0.5)])
def test_a_bad_config_value_names_the_field(field, value):
    with pytest.raises(ValueError, match=rf"FinetuneConfig\.{field}=.*allowed"):
        FinetuneConfig(**{field: value})


def test_config_defaults_are_valid_and_loggable():
    params = dataclasses.asdict(FinetuneConfig())
    assert params["model"] == "whisper-base" and params["refit"] == "all" and params["eval_batch_size"] == 8


def test_frame_pooling_lies_between_the_mean_and_the_max_of_the_valid_frames():
    from heardet.approaches.finetune.model import soft_max_pool

    logits = torch.tensor([[0.0, 4.0, -2.0, 99.0]])
    valid = torch.tensor([[True, True, True, False]])
    pooled = float(soft_max_pool(logits, valid)[0])
    assert 2 / 3 < pooled < 4.0, "log-mean-exp must sit between the mean and the max, ignoring the padded frame"


@pytest.mark.parametrize("head", ["conv", "gru"])
def test_a_frame_model_scores_padded_clips_like_lone_ones_and_says_where_the_phrase_is(tiny_whisper, head):
    torch.manual_seed(0)
    model, fe = tiny_factory(tiny_whisper)("tiny", 0.0)
    model = model.with_head("frames", "last", head).eval()
    assert type(model.head).__name__ == {"conv": "FrameHead", "gru": "GRUFrameHead"}[head]
    short, long = noise(1.23, 0), noise(4.0, 1)
    np.testing.assert_allclose(predict_proba(model, fe, [short, long], batch_size=2)[0],
                               predict_proba(model, fe, [short], batch_size=1)[0], atol=1e-5)
    scored = predict_audio(model, fe, [long], max_seconds=2.0, batch_size=2)[0]
    assert scored.start_s <= scored.phrase_start_s < scored.phrase_end_s <= scored.end_s + 1e-6, scored
    mean_model = model.with_head("mean").eval()
    assert predict_audio(mean_model, fe, [short])[0].phrase_start_s is None


def test_a_layer_mixing_head_sees_every_layer_and_scores_padded_clips_like_lone_ones(tiny_whisper):
    torch.manual_seed(0)
    model, fe = tiny_factory(tiny_whisper)("tiny", 0.0)
    mixing = model.with_head("frames", "all").eval()
    short, long = noise(1.23, 0), noise(4.0, 1)
    hidden, valid = mixing.encode(*collate([log_mel(fe, short)]))
    assert hidden.shape[:2] == (1, len(model.encoder.layers)), "one state per encoder layer"
    last, _ = model.encode(*collate([log_mel(fe, short)]))
    torch.testing.assert_close(hidden[:, -1], last, msg="the mix's last layer is the encoder's output")
    np.testing.assert_allclose(predict_proba(mixing, fe, [short, long], batch_size=2)[0],
                               predict_proba(mixing, fe, [short], batch_size=1)[0], atol=1e-5)
    assert {id(p) for p in mixing.mix.parameters()} <= {id(p) for p in mixing.head_parameters()}


def test_frozen_training_learns_from_cached_features_and_reuses_them(tiny_whisper, monkeypatch, tmp_path):
    from heardet.approaches.finetune import features

    monkeypatch.setenv("HEARDET_CACHE", str(tmp_path / "cache"))
    audios, labels, bounds = make_clips(16)
    examples = LabelledAudio.from_arrays(audios, labels, bounds)
    config = FinetuneConfig(model="tiny", n_folds=2, epochs=3, batch_size=8, encoder_lr=0.0, head_lr=1e-3,
                            max_seconds=2.0, device="cpu")
    assert config.frozen and config.pooling == "frames"
    encoded = []
    real = features.encode_clips
    monkeypatch.setattr("heardet.approaches.finetune.train.encode_clips",
                        lambda *a, **k: encoded.append(k["cache"] if "cache" in k else a[4]) or real(*a, **k))
    first = cross_validate(examples, config, tiny_factory(tiny_whisper), progress=False).result
    cache = encoded[-1]
    assert (cache.misses, cache.hits) == (16, 0) and len(list((tmp_path / "cache" / "features").rglob("*.npy"))) == 16
    again = cross_validate(examples, config, tiny_factory(tiny_whisper), progress=False).result
    assert (encoded[-1].hits, encoded[-1].misses) == (16, 0), "the second run recomputed cached features"
    np.testing.assert_allclose(again.oof_score, first.oof_score, atol=1e-4)
    fitted = fit(examples, config, tiny_factory(tiny_whisper), cv=None, progress=False)
    assert encoded[-1].hits == 16 and fitted.steps == 3 * 2


@pytest.mark.parametrize("head,center", [("conv", False), ("gru", False), ("gru", True)])
def test_a_frame_head_learns_which_frames_hold_the_phrase_and_points_at_them(head, center):
    from heardet.approaches.finetune.model import FRAME_SECONDS, localise
    from heardet.approaches.finetune.train import head_scores, train_head

    class Encoder(torch.nn.Module):  # the head never calls the encoder: only its width matters
        config = type("Config", (), {"d_model": 16})

    rng = np.random.default_rng(0)
    pattern = rng.normal(size=16).astype(np.float32)
    states, labels, where = [], [], []
    for i in range(40):
        frames = rng.normal(size=(int(rng.integers(40, 80)), 16)).astype(np.float32)
        start = int(rng.integers(5, 30))
        if i % 2 == 0:
            frames[start : start + 6] += 2 * pattern  # a 120 ms "phrase"
        states.append(frames)
        labels.append(int(i % 2 == 0))
        where.append(start)
    labels = np.asarray(labels)
    torch.manual_seed(0)
    model = EncoderClassifier(Encoder(), dropout=0.0, pooling="frames", frame_head=head, center=center)
    config = FinetuneConfig(model="x", epochs=30, batch_size=8, encoder_lr=0.0, head_lr=1e-2, device="cpu")
    train_head(model, states[:30], labels[:30], config, progress=False)
    probs, loss = head_scores(model, states[30:], labels[30:])
    assert probs[labels[30:] == 1].min() > probs[labels[30:] == 0].max(), probs
    for frames, start, label in zip(states[30:], where[30:], labels[30:]):
        if label:
            _, frame_logits = model.classify(*pad_states([frames]))
            begin, end = localise(frame_logits[0].detach().numpy())
            assert abs(begin - start * FRAME_SECONDS) <= 0.06 and abs(end - (start + 6) * FRAME_SECONDS) <= 0.06


def test_a_saved_frame_model_keeps_its_head_and_a_version_1_directory_loads_as_mean_on_the_last_layer(tiny_whisper, tmp_path):
    import json

    model, fe = tiny_factory(tiny_whisper)("tiny", 0.2)
    save_classifier(model.with_head("frames", "all"), fe, FinetuneConfig(model="tiny"), 0.5, tmp_path / "frames")
    loaded = load_classifier(tmp_path / "frames").model
    assert (loaded.pooling, loaded.layers, loaded.frame_head) == ("frames", "all", "conv")
    assert not loaded.center
    gru = model.with_head("frames", "all", "gru", center=True).eval()
    save_classifier(gru, fe, FinetuneConfig(model="tiny", frame_head="gru", center=True), 0.5, tmp_path / "gru")
    loaded = load_classifier(tmp_path / "gru").model
    assert (loaded.pooling, loaded.layers, loaded.frame_head, loaded.center) == ("frames", "all", "gru", True)
    clip = noise(1.5, 3)
    np.testing.assert_allclose(predict_proba(loaded, fe, [clip]), predict_proba(gru, fe, [clip]), atol=1e-6)
    with pytest.raises(ValueError, match="frame_head must be one of"):
        model.with_head("frames", "all", "lstm")
    save_classifier(model, fe, FinetuneConfig(model="tiny", pooling="mean"), 0.5, tmp_path / "old")
    meta_path = tmp_path / "old" / "encoder_classifier.json"
    meta = json.loads(meta_path.read_text())
    meta.pop("pooling")
    meta.pop("frame_head")
    meta["format_version"] = 1
    meta_path.write_text(json.dumps(meta))
    loaded = load_classifier(tmp_path / "old").model
    assert (loaded.pooling, loaded.layers, loaded.center) == ("mean", "last", False)


@pytest.mark.parametrize("head", ["conv", "gru"])
def test_a_centred_head_ignores_what_is_constant_across_a_clip_and_padding(head):
    class Encoder(torch.nn.Module):  # the head never calls the encoder: only its width matters
        config = type("Config", (), {"d_model": 16})

    rng = np.random.default_rng(1)
    clips = [rng.normal(size=(n, 16)).astype(np.float32) for n in (30, 45)]
    offset = 3 * rng.normal(size=16).astype(np.float32)  # a voice's or an engine's constant colour
    torch.manual_seed(0)
    centred = EncoderClassifier(Encoder(), dropout=0.0, pooling="frames", frame_head=head, center=True).eval()
    plain = EncoderClassifier(Encoder(), dropout=0.0, pooling="frames", frame_head=head).eval()
    plain.load_state_dict(centred.state_dict())
    with torch.no_grad():
        scores = centred.classify(*pad_states(clips))[0][:, 1]
        shifted = centred.classify(*pad_states([c + offset for c in clips]))[0][:, 1]
        alone = centred.classify(*pad_states(clips[:1]))[0][:, 1]  # no padding
        torch.testing.assert_close(shifted, scores, atol=1e-4, rtol=0)
        torch.testing.assert_close(alone, scores[:1], atol=1e-5, rtol=0)
        moved = plain.classify(*pad_states([c + offset for c in clips]))[0][:, 1]
        assert (moved - plain.classify(*pad_states(clips))[0][:, 1]).abs().max() > 1e-2, "uncentred: the shift counts"
    with pytest.raises(ValueError, match="center=True needs pooling='frames'"):
        EncoderClassifier(Encoder(), pooling="mean", center=True)
    with pytest.raises(ValueError, match=r"FinetuneConfig\.center=True is invalid"):
        FinetuneConfig(pooling="mean", center=True)


def test_phrase_offsets_place_the_phrase_around_the_peak_within_the_window():
    from heardet.approaches.finetune.model import localise

    logits = np.full(100, -5.0)
    logits[50] = 3.0  # peak frame centre: 50.5 * 20 ms = 1.01 s
    assert localise(logits, (0.5, 0.1)) == pytest.approx((0.51, 1.11))
    assert localise(logits, (5.0, 5.0)) == pytest.approx((0.0, 2.0)), "clipped to the window"


def test_rerunning_the_top_layers_from_cached_states_gives_what_the_whole_encoder_gives(tiny_whisper):
    model, fe = tiny_factory(tiny_whisper)("tiny", 0.0)
    mixing = model.with_head("frames", "all").eval()
    hidden, valid = mixing.encode(*collate([log_mel(fe, noise(1.3, 0)), log_mel(fe, noise(0.7, 1))]))
    with torch.no_grad():
        again = mixing.rerun_top(hidden, valid, 1)
    torch.testing.assert_close(again[valid.unsqueeze(1).expand(-1, again.shape[1], -1)],
                               hidden[valid.unsqueeze(1).expand(-1, hidden.shape[1], -1)], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match=r"top layers must be in \[1, 1\]"):
        mixing.rerun_top(hidden, valid, 2)
    with pytest.raises(ValueError, match="layers='all'"):
        model.rerun_top(hidden[:, -1], valid, 1)


def test_stage_b_trains_only_the_top_layers_from_cached_states_and_the_saved_model_scores_audio_alike(
        tiny_whisper, monkeypatch, tmp_path):
    from heardet.approaches.finetune.train import encoder_states, head_scores

    monkeypatch.setenv("HEARDET_CACHE", str(tmp_path / "cache"))
    audios, labels, bounds = make_clips(16)
    examples = LabelledAudio.from_arrays(audios, labels, bounds)
    config = FinetuneConfig(model="tiny", n_folds=2, epochs=2, batch_size=8, encoder_lr=1e-2, head_lr=1e-3,
                            dropout=0.0, max_seconds=2.0, device="cpu", top_layers=1, top_epochs=3)
    assert config.cached and not config.frozen
    before, _ = tiny_factory(tiny_whisper)("tiny", 0.0)
    cv = cross_validate(examples, config, tiny_factory(tiny_whisper), progress=False).result
    assert len(cv.extra["top_seconds"]) == 2 and len(cv.extra["encode_seconds"]) == 1
    fitted = fit(examples, config, tiny_factory(tiny_whisper), progress=False)
    assert fitted.steps == 2 * 2 + 3 * 2 and set(fitted.stage_seconds) == {"encode", "head", "top"}
    old, new = before.encoder.state_dict(), fitted.model.encoder.state_dict()
    changed = {name for name in old if not torch.equal(old[name], new[name])}
    assert changed and all(name.startswith(("layers.1.", "layer_norm.")) for name in changed), changed
    assert any(name.startswith("layer_norm.") for name in changed)
    # Saved and loaded, the model runs the whole (partly trained) encoder from audio: the same scores
    # as the top layer rerun from the cached (float16) states of the untouched layer beneath.
    loaded = load_classifier(fitted.save(tmp_path / "clf", config))
    from_audio = np.array([s.score for s in loaded.predict(audios)])
    base, fe = tiny_factory(tiny_whisper)("tiny", 0.0)
    states = encoder_states(base.with_head("frames", "all"), fe, examples, config, progress=False)
    from_cache, _ = head_scores(fitted.model, states, examples.labels, top_layers=1)
    np.testing.assert_allclose(from_audio, from_cache, atol=2e-3)


def stage_b_clips(monkeypatch, tmp_path) -> tuple[list[np.ndarray], LabelledAudio, FinetuneConfig]:
    """16 clips, the feature cache in ``tmp_path`` and a one-head recipe of stage (b) on the tiny model's top layer."""
    monkeypatch.setenv("HEARDET_CACHE", str(tmp_path / "cache"))
    audios, labels, bounds = make_clips(16)
    one = FinetuneConfig(model="tiny", n_folds=2, epochs=2, batch_size=8, encoder_lr=1e-2, head_lr=1e-3,
                         dropout=0.0, max_seconds=2.0, device="cpu", frame_head="gru", top_layers=1, top_epochs=3)
    return audios, LabelledAudio.from_arrays(audios, labels, bounds), one


def test_heads_after_stage_b_read_the_trained_encoder_and_the_first_is_the_one_head_model(tiny_whisper, monkeypatch,
                                                                                            tmp_path):
    from heardet.approaches.finetune.train import encoder_states, head_scores, rerun_states

    audios, examples, one = stage_b_clips(monkeypatch, tmp_path)
    three = dataclasses.replace(one, heads=3, head_vote="min")
    fitted = fit(examples, three, tiny_factory(tiny_whisper), progress=False)
    single = fit(examples, one, tiny_factory(tiny_whisper), progress=False)
    model = fitted.model
    assert model.heads == 3 and fitted.steps == 3 * 2 * 2 + 3 * 2
    assert set(fitted.stage_seconds) == {"encode", "head", "top", "rerun"}
    base, fe = tiny_factory(tiny_whisper)("tiny", 0.0)
    cached = encoder_states(base.with_head("frames", "all"), fe, examples, one, progress=False)
    # the states the extra heads trained on are what the trained encoder gives from audio
    rerun = rerun_states(model, cached, 1, progress=False)
    fresh = encoder_states(model, fe, examples, one, progress=False)  # the trained encoder, from audio
    for got, expected in zip(rerun, fresh):
        np.testing.assert_allclose(got.astype(np.float32), expected.astype(np.float32), atol=2e-2)
    # the first head (and the encoder) trained exactly as the one-head stage (b) model's
    for name, value in single.model.encoder.state_dict().items():
        torch.testing.assert_close(model.encoder.state_dict()[name], value)
    hidden, valid = pad_states(rerun, model.device)
    with torch.no_grad():
        each = [model._frames(hidden, valid, model.head, model.mix),
                *(model._frames(hidden, valid, r.head, r.mix) for r in model.extra_heads)]
        first = single.model.classify_cached(hidden, valid)
    np.testing.assert_allclose(each[0][1], first[1], atol=1e-5)
    probabilities = torch.stack([torch.sigmoid(clip) for clip, _ in each])
    assert (probabilities.max(0).values - probabilities.min(0).values).max() > 1e-3, "the heads are not distinct"
    from_cache, _ = head_scores(model, cached, examples.labels, top_layers=1)
    np.testing.assert_allclose(from_cache, probabilities.min(0).values, atol=1e-5)
    # saved and loaded, the model runs the trained encoder from audio and every head on it
    loaded = load_classifier(fitted.save(tmp_path / "clf", three))
    assert loaded.model.heads == 3 and loaded.model.head_vote == "min"
    np.testing.assert_allclose([s.score for s in loaded.predict(audios)], from_cache, atol=2e-3)


def test_fits_train_their_own_top_layers_from_the_same_encoder_and_score_with_their_mean(tiny_whisper, monkeypatch,
                                                                                           tmp_path):
    from heardet.approaches.finetune.train import encoder_states, head_scores, one_head

    audios, examples, one = stage_b_clips(monkeypatch, tmp_path)
    three = dataclasses.replace(one, fits=3)
    fitted = fit(examples, three, tiny_factory(tiny_whisper), progress=False)
    single = fit(examples, one, tiny_factory(tiny_whisper), progress=False)
    model = fitted.model
    assert model.fits == 3 and model.heads == 1 and fitted.steps == 3 * (2 * 2 + 3 * 2)
    assert set(fitted.stage_seconds) == {"encode", "head", "top"}
    # the first fit is the one-fit model: its encoder and head trained exactly alike
    for name, value in single.model.encoder.state_dict().items():
        torch.testing.assert_close(model.encoder.state_dict()[name], value)
    base, fe = tiny_factory(tiny_whisper)("tiny", 0.0)
    # every fit's top layer started from the pretrained one and trained on its own; the layer beneath is shared
    pretrained = base.encoder.layers[1].state_dict()
    tops = [model.encoder.layers[1].state_dict(), *(f.layers[0].state_dict() for f in model.extra_fits)]
    for k, top in enumerate(tops):
        for j in range(k):
            assert not torch.allclose(top["fc1.weight"], tops[j]["fc1.weight"]), f"fits {j} and {k} are one"
        assert not torch.allclose(top["fc1.weight"], pretrained["fc1.weight"]), f"fit {k}'s top layer never trained"
    for name, value in base.encoder.layers[0].state_dict().items():
        torch.testing.assert_close(model.encoder.layers[0].state_dict()[name], value)
    cached = encoder_states(base.with_head("frames", "all"), fe, examples, one, progress=False)
    hidden, valid = pad_states(cached, model.device)
    with torch.no_grad():
        each = [single.model.classify_cached(hidden, valid, 1)[0][:, 1],
                *(model._frames(model.rerun_top(hidden, valid, 1, f), valid, f.head, f.mix)[0]
                  for f in model.extra_fits)]
    probabilities = torch.sigmoid(torch.stack(each))
    assert (probabilities.max(0).values - probabilities.min(0).values).max() > 1e-3, "the fits are not distinct"
    from_cache, _ = head_scores(model, cached, examples.labels, top_layers=1)
    np.testing.assert_allclose(from_cache, probabilities.mean(0), atol=1e-5)
    # saved and loaded, the model runs the shared layer once and every fit's own top layer from audio
    loaded = load_classifier(fitted.save(tmp_path / "clf", three))
    assert loaded.model.fits == loaded.meta["fits"] == 3 and loaded.meta["fit_layers"] == 1
    np.testing.assert_allclose([s.score for s in loaded.predict(audios)], from_cache, atol=2e-3)
    assert one_head(three).fits == 1  # the folds and engine hold-outs train one fit
    with pytest.raises(ValueError, match="add_fit needs a fit of the same kind"):
        model.add_fit(model.fresh_head(), 1)
    for bad in ({"top_layers": 0}, {"heads": 2}):
        with pytest.raises(ValueError, match=r"FinetuneConfig\.fits=2 is invalid"):
            dataclasses.replace(one, fits=2, **bad)


def test_fits_with_a_shared_stage_a_train_it_once_and_start_each_stage_b_from_its_head(tiny_whisper, monkeypatch,
                                                                                      tmp_path):
    from heardet.approaches.finetune import train

    audios, examples, one = stage_b_clips(monkeypatch, tmp_path)
    shared = dataclasses.replace(one, fits=3, fit_stage_a="shared")
    runs = []  # each train_head call: its stage, fit, and the head and top layer it started from
    real = train.train_head

    def recording(model, *args, **kwargs):
        top_layers = args[6] if len(args) > 6 else kwargs.get("top_layers", 0)
        runs.append((top_layers, kwargs.get("fit", 0), {k: v.clone() for k, v in model.head.state_dict().items()},
                     model.encoder.layers[1].state_dict()["fc1.weight"].clone()))
        return real(model, *args, **kwargs)

    monkeypatch.setattr(train, "train_head", recording)
    fitted = fit(examples, shared, tiny_factory(tiny_whisper), progress=False)
    model = fitted.model
    assert model.fits == 3 and fitted.steps == 2 * 2 + 3 * 3 * 2  # one stage (a), three stage (b) runs
    assert [(top, k) for top, k, *_ in runs] == [(0, 0), (1, 0), (1, 1), (1, 2)]
    pretrained = tiny_factory(tiny_whisper)("tiny", 0.0)[0].encoder.layers[1].state_dict()["fc1.weight"]
    for _, k, head, top in runs[1:]:  # every stage (b) starts from the first fit's stage (a) head and the pretrained top
        for name, value in runs[1][2].items():
            torch.testing.assert_close(head[name], value, msg=f"fit {k}'s stage (b) started from another head")
        torch.testing.assert_close(top, pretrained)
    tops = [model.encoder.layers[1].state_dict()["fc1.weight"], *(f.layers[0].state_dict()["fc1.weight"]
                                                                  for f in model.extra_fits)]
    assert not any(torch.allclose(tops[j], tops[k]) for k in range(3) for j in range(k)), "two fits are one"
    base, fe = tiny_factory(tiny_whisper)("tiny", 0.0)
    cached = train.encoder_states(base.with_head("frames", "all"), fe, examples, one, progress=False)
    from_cache, _ = train.head_scores(model, cached, examples.labels, top_layers=1)
    loaded = load_classifier(fitted.save(tmp_path / "clf", shared))
    np.testing.assert_allclose([s.score for s in loaded.predict(audios)], from_cache, atol=2e-3)
    with pytest.raises(ValueError, match=r"FinetuneConfig\.fit_stage_a='shared' is invalid; allowed: 'own', or"):
        dataclasses.replace(one, fit_stage_a="shared")
    # fold_stage_b=False: the folds and engine hold-outs train one stage (a) head on the frozen encoder
    held = train.one_head(dataclasses.replace(shared, fold_stage_b=False))
    assert (held.top_layers, held.encoder_lr, held.fits, held.fit_stage_a, held.frozen) == (0, 0.0, 1, "own", True)
    assert train.one_head(shared).top_layers == 1  # by default they train stage (b) too
    with pytest.raises(ValueError, match=r"FinetuneConfig\.fold_stage_b=False is invalid; allowed: True, or False with"):
        dataclasses.replace(one, top_layers=0, fold_stage_b=False)


def test_shared_fits_averaged_leave_one_fit_of_their_mean_weights_that_saves_and_scores_as_trained(
        tiny_whisper, monkeypatch, tmp_path):
    from heardet.approaches.finetune import train

    audios, examples, one = stage_b_clips(monkeypatch, tmp_path)
    shared = dataclasses.replace(one, fits=3, fit_stage_a="shared")
    voted = fit(examples, shared, tiny_factory(tiny_whisper), progress=False).model
    fitted = fit(examples, dataclasses.replace(shared, fit_merge="average"), tiny_factory(tiny_whisper),
                 progress=False)
    model = fitted.model
    assert model.fits == 1 and fitted.steps == 2 * 2 + 3 * 3 * 2  # trained as the three fits, kept as one
    # the same seeds train the same three fits; the kept one holds each weight's mean over them
    parts = [(voted.encoder.layers[1], voted.encoder.layer_norm, voted.head, voted.mix),
             *((f.layers[0], f.layer_norm, f.head, f.mix) for f in voted.extra_fits)]
    for k, module in enumerate((model.encoder.layers[1], model.encoder.layer_norm, model.head, model.mix)):
        for name, value in module.state_dict().items():
            if value.is_floating_point():
                mean = torch.stack([p[k].state_dict()[name] for p in parts]).mean(dim=0)
                torch.testing.assert_close(value, mean, msg=f"{name} is not the fits' mean")
    lower = voted.encoder.layers[0].state_dict()["fc1.weight"]  # below the fits: pretrained, untouched
    torch.testing.assert_close(model.encoder.layers[0].state_dict()["fc1.weight"], lower)
    base, fe = tiny_factory(tiny_whisper)("tiny", 0.0)
    cached = train.encoder_states(base.with_head("frames", "all"), fe, examples, one, progress=False)
    from_cache, _ = train.head_scores(model, cached, examples.labels, top_layers=1)
    loaded = load_classifier(fitted.save(tmp_path / "clf", dataclasses.replace(shared, fit_merge="average")))
    assert loaded.model.fits == 1
    np.testing.assert_allclose([s.score for s in loaded.predict(audios)], from_cache, atol=2e-3)
    with pytest.raises(ValueError, match=r"FinetuneConfig\.fit_merge='average' is invalid; allowed: 'vote', or"):
        dataclasses.replace(one, fits=3, fit_merge="average")  # own stage (a) heads: nothing shared to average
    with pytest.raises(ValueError, match="average_fits needs a model of several fits"):
        model.average_fits()
    assert train.one_head(dataclasses.replace(shared, fit_merge="average")).fit_merge == "vote"
    # more heads go with averaged fits only: they train after the merge, on the merged encoder's states
    with pytest.raises(ValueError, match=r"FinetuneConfig\.fits=3 is invalid; allowed: 1, or with top_layers > 0"):
        dataclasses.replace(shared, heads=2)
    headed = dataclasses.replace(shared, fit_merge="average", heads=2, head_vote="min")
    both = fit(examples, headed, tiny_factory(tiny_whisper), progress=False)
    assert (both.model.fits, both.model.heads) == (1, 2)
    for name, value in model.state_dict().items():  # the same merged fit as without the extra head
        torch.testing.assert_close(both.model.state_dict()[name], value, msg=name)
    from_cache, _ = train.head_scores(both.model, cached, examples.labels, top_layers=1)
    loaded = load_classifier(both.save(tmp_path / "headed", headed))
    assert (loaded.model.fits, loaded.model.heads, loaded.model.head_vote) == (1, 2, "min")
    np.testing.assert_allclose([s.score for s in loaded.predict(audios)], from_cache, atol=2e-3)


@pytest.mark.parametrize("amx", [True, False])
def test_cpu_bf16_runs_stage_b_steps_in_bf16_autocast_where_the_cpu_has_amx_and_says_when_it_cannot(
        tiny_whisper, monkeypatch, tmp_path, caplog, amx):
    from heardet.approaches.finetune import model as model_module
    from heardet.approaches.finetune import train

    _, examples, one = stage_b_clips(monkeypatch, tmp_path)
    config = dataclasses.replace(one, cpu_bf16=True)
    monkeypatch.setattr(model_module, "cpu_has_bf16_units", lambda: amx)
    monkeypatch.setattr(train, "cpu_has_bf16_units", lambda: amx)
    seen: dict[int, set] = {0: set(), 1: set()}  # top_layers -> autocast dtypes of the training steps' forwards
    classify_cached = EncoderClassifier.classify_cached

    def spy(self, hidden, valid, top_layers=0):
        if torch.is_grad_enabled():
            seen[top_layers].add(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
        return classify_cached(self, hidden, valid, top_layers)

    monkeypatch.setattr(EncoderClassifier, "classify_cached", spy)
    with caplog.at_level(logging.WARNING):
        fitted = fit(examples, config, tiny_factory(tiny_whisper), progress=False)
    assert seen[0] == {None}, "stage (a) trains in float32"
    assert seen[1] == ({torch.bfloat16} if amx else {None}), seen
    assert ("cpu_bf16=True has no effect here" in caplog.text) is not amx, caplog.text
    assert all(p.dtype == torch.float32 for p in fitted.model.parameters()), "the weights stay float32"
    assert train.one_head(config).cpu_bf16, "folds that train stage (b) train it in bf16 too"
    assert not train.one_head(dataclasses.replace(config, fold_stage_b=False)).cpu_bf16, "stage (a)-only folds"
    with pytest.raises(ValueError, match=r"FinetuneConfig\.cpu_bf16=True is invalid; allowed: False, or True with "
                                         r"top_layers > 0"):
        dataclasses.replace(one, top_layers=0, encoder_lr=0.0, cpu_bf16=True)


def test_stage_b_settings_that_cannot_work_are_refused_naming_the_field(tiny_whisper):
    with pytest.raises(ValueError, match=r"FinetuneConfig.top_layers=1 is invalid.*layers='all'"):
        FinetuneConfig(model="tiny", layers="last", top_layers=1)
    with pytest.raises(ValueError, match=r"FinetuneConfig.top_layers=1 is invalid.*encoder_lr > 0"):
        FinetuneConfig(model="tiny", encoder_lr=0.0, top_layers=1)
    audios, labels, bounds = make_clips(8)
    config = FinetuneConfig(model="tiny", n_folds=2, epochs=1, encoder_lr=1e-3, max_seconds=2.0, device="cpu",
                            top_layers=2)
    with pytest.raises(ValueError, match=r"top_layers=2 is invalid for 'tiny'; allowed: at most 1"):
        fit(LabelledAudio.from_arrays(audios, labels, bounds), config, tiny_factory(tiny_whisper), progress=False)


def test_channel_dropout_zeroes_whole_channels_of_a_clip_in_training_only():
    from heardet.approaches.finetune.model import ChannelDropout

    torch.manual_seed(0)
    hidden = torch.ones(8, 5, 64)
    drop = ChannelDropout(0.5).train()
    out = drop(hidden)
    dropped = out == 0
    assert torch.equal(dropped, dropped[:, :1].expand_as(dropped)), "a channel is dropped in every frame alike"
    assert 0.3 < dropped[:, 0].float().mean() < 0.7 and torch.allclose(out[~dropped], torch.tensor(2.0))
    assert not torch.equal(dropped[0, 0], dropped[1, 0]), "each clip drops its own channels"
    assert torch.equal(drop.eval()(hidden), hidden) and torch.equal(ChannelDropout(0.0).train()(hidden), hidden)
    with pytest.raises(ValueError, match=r"feature dropout must be in \[0, 1\), got 1.0"):
        ChannelDropout(1.0)


def test_style_mix_trades_clip_statistics_in_training_and_keeps_each_clips_pattern():
    from heardet.approaches.finetune.model import StyleMix

    torch.manual_seed(0)
    pattern = torch.randn(6, 12, 16)
    pattern = (pattern - pattern.mean(dim=1, keepdim=True)) / pattern.std(dim=1, unbiased=False, keepdim=True)
    valid = torch.ones(6, 12, dtype=torch.bool)
    valid[5, 8:] = False  # clip 5 is 8 frames long
    short = pattern[5, :8] - pattern[5, :8].mean(dim=0)
    pattern[5, :8] = short / short.pow(2).mean(dim=0).sqrt()
    level = torch.arange(6.0).view(6, 1, 1) * 10.0  # clip k: every channel's mean 10 k, spread 1 + k
    hidden = pattern * (1.0 + torch.arange(6.0).view(6, 1, 1)) + level
    hidden[5, 8:] = 1e6  # padding: must not move clip 5's statistics

    out = StyleMix(1.0).train()(hidden, valid)
    means = torch.stack([out[k, valid[k]].mean(dim=0) for k in range(6)])
    spreads = torch.stack([out[k, valid[k]].std(dim=0, unbiased=False) for k in range(6)])
    assert torch.allclose(means / 10.0 + 1.0, spreads, atol=1e-3), "mean and spread come from the same two clips"
    assert (means.std(dim=1) < 1e-3).all() and (means[:, 0] >= -1e-3).all() and (means[:, 0] <= 50.001).all()
    assert not torch.allclose(means[:, 0], torch.arange(6.0) * 10.0, atol=0.5), "some clip took another's statistics"
    for k in range(6):  # each clip's frame-to-frame pattern is its own
        got = (out[k, valid[k]] - means[k]) / spreads[k]
        assert torch.allclose(got, pattern[k, valid[k]], atol=1e-3)
    assert torch.equal(StyleMix(1.0).eval()(hidden, valid), hidden)
    state = torch.get_rng_state()
    assert torch.equal(StyleMix(0.0).train()(hidden, valid), hidden)
    assert torch.equal(torch.get_rng_state(), state), "off, it draws no random number: recipes train as before"
    half = StyleMix(0.5).train()
    assert 60 < sum(not torch.equal(half(hidden, valid), hidden) for _ in range(200)) < 140, "p is per batch"
    assert torch.equal(StyleMix(1.0).train()(hidden[:1], valid[:1]), hidden[:1]), "a clip alone has no one to trade with"
    with pytest.raises(ValueError, match=r"style mix probability must be in \[0, 1\], got 1.5"):
        StyleMix(1.5)
    with pytest.raises(ValueError, match=r"FinetuneConfig\.style_mix=0.5 is invalid.*pooling='mean'"):
        FinetuneConfig(pooling="mean", layers="last", style_mix=0.5)


@pytest.mark.parametrize(("field", "module", "kind", "value", "invalid"), [
    ("feature_dropout", "channel_dropout", "ChannelDropout", 0.4, 1.0),
    ("style_mix", "style_mix", "StyleMix", 1.0, 1.5),
])
def test_a_feature_augmentation_reaches_the_trained_model_and_leaves_its_scores_alone(
        field, module, kind, value, invalid, tiny_whisper, monkeypatch, tmp_path):
    from heardet.approaches.finetune import model as model_module

    monkeypatch.setenv("HEARDET_CACHE", str(tmp_path / "cache"))
    changed = []  # per call of the augmentation in training: did it change the features?
    forward = getattr(model_module, kind).forward

    def spy(self, hidden, *rest):
        out = forward(self, hidden, *rest)
        if self.training:
            changed.append(not torch.equal(out, hidden))
        return out

    monkeypatch.setattr(getattr(model_module, kind), "forward", spy)
    audios, labels, bounds = make_clips(12)
    examples = LabelledAudio.from_arrays(audios, labels, bounds)
    config = FinetuneConfig(model="tiny", n_folds=2, epochs=2, batch_size=4, encoder_lr=0.0, head_lr=1e-3,
                            max_seconds=2.0, device="cpu", **{field: value})
    plain = fit(examples, dataclasses.replace(config, **{field: 0.0}), tiny_factory(tiny_whisper), progress=False)
    assert changed and not any(changed), "off, it leaves training's features alone"
    changed.clear()
    fitted = fit(examples, config, tiny_factory(tiny_whisper), progress=False)
    assert any(changed), "on, it changes training's features"
    assert getattr(fitted.model, module).p == value and getattr(plain.model, module).p == 0.0
    assert getattr(fitted.model.fresh_head(), module).p == value, "a further head trains with it too"
    heads = [dict(m.model.head.named_parameters()) for m in (plain, fitted)]
    assert not torch.allclose(heads[0]["conv1.weight"], heads[1]["conv1.weight"]), "it changed training"
    first = predict_audio(fitted.model, fitted.feature_extractor, audios[:3], 2.0)
    getattr(fitted.model, module).p = 0.0
    again = predict_audio(fitted.model, fitted.feature_extractor, audios[:3], 2.0)
    assert [r.score for r in first] == [r.score for r in again], "scoring does not augment"
    with pytest.raises(ValueError, match=rf"FinetuneConfig\.{field}={invalid} is invalid"):
        FinetuneConfig(**{field: invalid})


def test_outside_frames_are_a_positives_frames_away_from_its_phrase_in_the_cached_crop():
    from heardet.approaches.finetune.train import OUTSIDE_MARGIN_S, outside_frames

    audios = [noise(3.0, 1), noise(3.0, 2), noise(0.6, 3)]
    examples = LabelledAudio.from_arrays(audios, [1, 0, 1], [((1.0, 1.5),), (), ((0.1, 0.4),)])
    states = [np.zeros((100, 8)), np.zeros((100, 8)), np.zeros((30, 8))]  # 2 s crops, 20 ms frames
    away, negative, short = outside_frames(examples, states, max_seconds=2.0)
    assert negative is None and short is None, "negatives, and positives with no frame away, have no mask"
    t = 0.25 + (np.arange(100) + 0.5) * 0.02  # the 2 s crop is centred on the phrase: it starts at 0.25 s
    expected = (t < 1.0 - OUTSIDE_MARGIN_S) | (t > 1.5 + OUTSIDE_MARGIN_S)
    assert np.array_equal(away, expected) and 0 < away.sum() < 100


def test_outside_weight_teaches_the_frames_away_from_the_phrase_to_score_low(tiny_whisper, monkeypatch, tmp_path):
    from heardet.approaches.finetune.train import encoder_states, outside_frames

    monkeypatch.setenv("HEARDET_CACHE", str(tmp_path / "cache"))
    audios, labels, bounds = make_clips(12, seconds=2.5)
    examples = LabelledAudio.from_arrays(audios, labels, bounds)
    config = FinetuneConfig(model="tiny", n_folds=2, epochs=8, batch_size=4, encoder_lr=0.0, head_lr=3e-3,
                            max_seconds=3.0, device="cpu")
    fitted = {w: fit(examples, dataclasses.replace(config, outside_weight=w), tiny_factory(tiny_whisper),
                     progress=False) for w in (0.0, 3.0)}
    states = encoder_states(fitted[0.0].model, fitted[0.0].feature_extractor, examples, config, progress=False)
    masks = outside_frames(examples, states, config.max_seconds)
    away_logit = {}
    for w, f in fitted.items():
        with torch.no_grad():
            away_logit[w] = np.mean([f.model.classify_cached(*pad_states([states[i]], f.model.device))[1][0]
                                     .numpy()[m].max() for i, m in enumerate(masks) if m is not None])
    assert away_logit[3.0] < away_logit[0.0], away_logit
    for bad in ({"pooling": "mean"}, {"encoder_lr": 1e-5}):
        with pytest.raises(ValueError, match=r"FinetuneConfig\.outside_weight=1.0 is invalid"):
            FinetuneConfig(outside_weight=1.0, **{"encoder_lr": 0.0, **bad})


def test_the_gru_head_matches_a_bidirectional_gru_on_packed_clips_and_loads_its_weights():
    from heardet.approaches.finetune.model import GRUFrameHead

    torch.manual_seed(0)
    head = GRUFrameHead(16, dropout=0.0).eval()
    hidden = torch.randn(3, 9, 16)
    valid = torch.arange(9).unsqueeze(0) < torch.tensor([[9], [4], [1]])
    saved = {k: v for k, v in head.state_dict().items() if not k.startswith(("ahead.", "behind."))}
    # a head saved before the split had one bidirectional module, ``gru``
    bidirectional = torch.nn.GRU(head.ahead.input_size, head.ahead.hidden_size, batch_first=True, bidirectional=True)
    saved.update({f"gru.{k}": v for k, v in bidirectional.state_dict().items()})
    head.load_state_dict(saved)
    with torch.no_grad():
        x = head.first(hidden, valid).transpose(1, 2)
        packed = torch.nn.utils.rnn.pack_padded_sequence(x, valid.sum(1), batch_first=True, enforce_sorted=False)
        context, _ = torch.nn.utils.rnn.pad_packed_sequence(bidirectional(packed)[0], batch_first=True,
                                                            total_length=9)
        expected = head.out(torch.cat([x, context], dim=-1)).squeeze(-1)
        torch.testing.assert_close(head(hidden, valid), expected, atol=1e-6, rtol=1e-5)


def cached_clips(monkeypatch, tmp_path) -> tuple[list[np.ndarray], LabelledAudio]:
    """Eight generated clips (their audio, and as labelled examples), with the feature cache under ``tmp_path``."""
    monkeypatch.setenv("HEARDET_CACHE", str(tmp_path / "cache"))
    audios, labels, bounds = make_clips(8)
    return audios, LabelledAudio.from_arrays(audios, labels, bounds)


def test_several_heads_score_with_the_mean_of_their_probabilities_and_save_and_load_alike(tiny_whisper, monkeypatch,
                                                                                          tmp_path):
    audios, examples = cached_clips(monkeypatch, tmp_path)
    one = FinetuneConfig(model="tiny", n_folds=2, epochs=2, batch_size=4, encoder_lr=0.0, head_lr=1e-3,
                         max_seconds=2.0, device="cpu", frame_head="gru", feature_dropout=0.3)
    three = dataclasses.replace(one, heads=3)
    fitted = fit(examples, three, tiny_factory(tiny_whisper), progress=False)
    model = fitted.model
    assert model.heads == 3 and fitted.steps == 3 * 2 * 2
    single = fit(examples, one, tiny_factory(tiny_whisper), progress=False)
    states = encoder_states(model, fitted.feature_extractor, examples, one, progress=False)
    hidden, valid = pad_states(states, model.device)
    with torch.no_grad():
        logits, frames = model.classify_cached(hidden, valid)
        each = [model._frames(hidden, valid, model.head, model.mix),
                *(model._frames(hidden, valid, r.head, r.mix) for r in model.extra_heads)]
        first = single.model.classify_cached(hidden, valid)
    # the first head is the one-head model's; the others trained from other seeds; the model scores their mean
    np.testing.assert_allclose(each[0][1], first[1], atol=1e-6)
    probabilities = torch.stack([torch.sigmoid(clip) for clip, _ in each])
    assert (probabilities.max(0).values - probabilities.min(0).values).max() > 1e-3, "the heads are not distinct"
    np.testing.assert_allclose(torch.softmax(logits, -1)[:, 1], probabilities.mean(0), atol=1e-5)
    np.testing.assert_allclose(frames, torch.stack([f for _, f in each]).mean(0), atol=1e-5)

    before = predict_audio(model, fitted.feature_extractor, audios, 2.0, 4, 0.5)
    save_classifier(model, fitted.feature_extractor, three, 0.5, tmp_path / "clf")
    loaded = load_classifier(tmp_path / "clf")
    assert loaded.model.heads == 3 and loaded.meta["heads"] == 3
    after = loaded.predict(audios, batch_size=4)
    np.testing.assert_allclose([s.score for s in after], [s.score for s in before], atol=1e-6)
    assert [s.phrase_start_s for s in after] == pytest.approx([s.phrase_start_s for s in before], abs=1e-6)
    for bad in ({"encoder_lr": 1e-5}, {"pooling": "mean"}):  # from audio, or without frames
        with pytest.raises(ValueError, match=r"FinetuneConfig\.heads=2 is invalid"):
            FinetuneConfig(heads=2, **{"encoder_lr": 0.0, **bad})


def test_head_vote_min_calls_a_clip_only_when_every_head_does_and_is_saved_with_the_model(tiny_whisper, monkeypatch,
                                                                                        tmp_path):
    audios, examples = cached_clips(monkeypatch, tmp_path)
    config = FinetuneConfig(model="tiny", n_folds=2, epochs=2, batch_size=4, encoder_lr=0.0, head_lr=1e-3,
                            max_seconds=2.0, device="cpu", frame_head="gru", heads=3, head_vote="min")
    fitted = fit(examples, config, tiny_factory(tiny_whisper), progress=False)
    model = fitted.model
    assert model.heads == 3 and model.head_vote == "min"
    states = encoder_states(model, fitted.feature_extractor, examples, config, progress=False)
    hidden, valid = pad_states(states, model.device)

    def scored() -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            logits, frames = model.classify_cached(hidden, valid)
        return torch.softmax(logits, -1)[:, 1], frames

    with torch.no_grad():
        each = [model._frames(hidden, valid, model.head, model.mix),
                *(model._frames(hidden, valid, r.head, r.mix) for r in model.extra_heads)]
    probabilities = torch.stack([torch.sigmoid(clip) for clip, _ in each])
    assert (probabilities.max(0).values - probabilities.min(0).values).max() > 1e-3, "the heads are not distinct"
    lowest, frames = scored()
    np.testing.assert_allclose(lowest, probabilities.min(0).values, atol=1e-5)
    np.testing.assert_allclose(frames, torch.stack([f for _, f in each]).mean(0), atol=1e-5)  # where: the mean
    model.head_vote = "mean"
    np.testing.assert_allclose(scored()[0], probabilities.mean(0), atol=1e-5)
    model.head_vote = "min"

    before = predict_audio(model, fitted.feature_extractor, audios, 2.0, 4, 0.5)
    save_classifier(model, fitted.feature_extractor, config, 0.5, tmp_path / "clf")
    loaded = load_classifier(tmp_path / "clf")
    assert loaded.model.head_vote == loaded.meta["head_vote"] == "min"
    np.testing.assert_allclose([s.score for s in loaded.predict(audios, batch_size=4)], [s.score for s in before],
                               atol=1e-6)
    meta_file = tmp_path / "clf" / META_FILE  # a model saved before head_vote existed scores with the mean
    meta = json.loads(meta_file.read_text())
    del meta["head_vote"]
    meta_file.write_text(json.dumps({**meta, "format_version": 6}))
    assert load_classifier(tmp_path / "clf").model.head_vote == "mean"
    with pytest.raises(ValueError, match=r"FinetuneConfig\.head_vote='max' is invalid; allowed: 'mean' or 'min'"):
        dataclasses.replace(config, head_vote="max")
    with pytest.raises(ValueError, match=r"head_vote must be one of"):
        EncoderClassifier(model.encoder, pooling="frames", heads=2, head_vote="max")


def test_the_folds_and_engine_hold_outs_train_one_head_and_the_final_fit_all_of_them(tiny_whisper, monkeypatch,
                                                                                      tmp_path):
    from heardet.approaches.finetune.train import engine_holdout

    monkeypatch.setenv("HEARDET_CACHE", str(tmp_path / "cache"))
    audios, labels, bounds = make_clips(8)
    examples = dataclasses.replace(LabelledAudio.from_arrays(audios, labels, bounds),
                                   engines=tuple("ab"[i // 4] for i in range(8)))  # both labels in each engine
    one = FinetuneConfig(model="tiny", n_folds=2, epochs=2, batch_size=4, encoder_lr=0.0, head_lr=1e-3,
                         max_seconds=2.0, device="cpu", frame_head="gru")
    three = dataclasses.replace(one, heads=3)
    factory = tiny_factory(tiny_whisper)
    cv_one, cv_three = (cross_validate(examples, c, factory, progress=False) for c in (one, three))
    np.testing.assert_allclose(cv_three.result.oof_score, cv_one.result.oof_score, atol=1e-6)
    assert cv_three.result.extra["steps"] == cv_one.result.extra["steps"] == [2, 2]  # one head: 1 batch x 2 epochs
    held_one, held_three = (engine_holdout(examples, c, 0.5, factory) for c in (one, three))
    assert set(held_three) == {"a", "b"} and held_three == held_one
    assert fit(examples, three, factory, progress=False).model.heads == 3
    best = cross_validate(examples, dataclasses.replace(three, refit="best_fold"), factory, progress=False)
    assert best.best_fold_model.model.heads == 3  # a best fold's model is the final model: it keeps its heads


def test_average_epochs_ends_the_head_on_the_mean_of_its_last_epochs_weights_along_the_same_run():
    from heardet.approaches.finetune.train import train_head

    class Encoder(torch.nn.Module):  # the head never calls the encoder: only its width matters
        config = type("Config", (), {"d_model": 8})

    rng = np.random.default_rng(1)
    states = [rng.normal(size=(int(rng.integers(20, 40)), 8)).astype(np.float32) for _ in range(12)]
    labels = np.arange(12) % 2
    config = FinetuneConfig(model="x", epochs=5, batch_size=4, encoder_lr=0.0, head_lr=1e-2, device="cpu",
                            frame_head="gru", dropout=0.2)

    def trained(average_epochs: int) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
        torch.manual_seed(0)
        model = EncoderClassifier(Encoder(), dropout=0.2, pooling="frames", frame_head="gru")
        ends = []  # the weights at each epoch's end (3 steps an epoch)
        train_head(model, states, labels, dataclasses.replace(config, average_epochs=average_epochs), progress=False,
                   on_step=lambda fold, step, loss: ends.append([p.detach().clone() for p in model.head_parameters()])
                   if step % 3 == 0 else None)
        return [p.detach().clone() for p in model.head_parameters()], ends

    last, ends = trained(0)
    averaged, same_ends = trained(3)
    assert len(ends) == 5
    for a, b in zip(ends[-1], same_ends[-1]):  # the same run up to its last step: averaging only changes the end
        torch.testing.assert_close(a, b)
    for got, want, *epochs in zip(averaged, last, *ends[-3:]):
        torch.testing.assert_close(got, torch.stack(epochs).mean(0))
        assert not torch.allclose(got, want)
    with pytest.raises(ValueError, match=r"FinetuneConfig\.average_epochs=6 is invalid.*at most epochs \(5\)"):
        dataclasses.replace(config, average_epochs=6)
    with pytest.raises(ValueError, match=r"FinetuneConfig\.average_epochs=2 is invalid.*cached states"):
        FinetuneConfig(encoder_lr=1e-5, average_epochs=2)


def test_a_weighted_clip_counts_in_the_loss_as_that_many_copies_of_it():
    from heardet.approaches.finetune.train import _clip_loss

    torch.manual_seed(0)
    logits, target = torch.randn(4, 2), torch.tensor([1, 0, 0, 1])
    weights, rows = np.array([9.0, 1.0, 3.0, 1.0, 1.0]), np.array([4, 1, 2, 3])  # rows of the whole set
    repeated = [0, 1, 2, 2, 2, 3]  # clip 2 (row 2, weight 3) three times
    torch.testing.assert_close(_clip_loss(logits, target, weights, rows),
                               torch.nn.functional.cross_entropy(logits[repeated], target[repeated]))
    torch.testing.assert_close(_clip_loss(logits, target, None, rows), torch.nn.functional.cross_entropy(logits, target))


def test_hard_negative_weight_pushes_the_near_misses_down_and_kinds_come_from_the_manifest(
        tiny_whisper, monkeypatch, tmp_path, caplog):
    import json

    import soundfile as sf

    from heardet.approaches.finetune.train import clip_weights, prepare_examples
    from heardet.data import load_dataset

    monkeypatch.setenv("HEARDET_CACHE", str(tmp_path / "cache"))
    # Positives: a long burst. Near misses: a shorter burst in the same place, so they share half the cue.
    audios, labels, bounds, kinds = [], [], [], []
    for i in range(16):
        base, kind = noise(2.0, seed=300 + i), ("positive", "hard_negative", "negative", "hard_negative")[i % 4]
        audios.append(with_burst(base, 0.4 + 0.05 * (i % 3), 0.6) if kind == "positive" else
                      with_burst(base, 0.4 + 0.05 * (i % 3), 0.25) if kind == "hard_negative" else base)
        labels.append(int(kind == "positive"))
        bounds.append(((0.4, 1.0),) if kind == "positive" else ())
        kinds.append(kind)
    root = tmp_path / "data"
    (root / "wav_train").mkdir(parents=True)
    (root / "wav_test").mkdir()
    for i, audio in enumerate(audios):
        sf.write(root / "wav_train" / f"c{i:02d}.wav", audio, SAMPLE_RATE)
    (root / "word_bounds.json").write_text(json.dumps({f"c{i:02d}": [list(b) for b in bounds[i]]
                                                      for i in range(16) if labels[i]}))
    (root / "manifest.jsonl").write_text("".join(json.dumps({"id": f"c{i:02d}", "kind": k}) + "\n"
                                                 for i, k in enumerate(kinds)))
    examples = prepare_examples(load_dataset(root).train, progress=False)
    assert examples.kinds == tuple(kinds) and examples.subset([1, 2]).kinds == ("hard_negative", "negative")

    config = FinetuneConfig(model="tiny", n_folds=2, epochs=6, batch_size=4, encoder_lr=0.0, head_lr=3e-3,
                            max_seconds=2.0, device="cpu")
    assert clip_weights(examples, config) is None
    weights = clip_weights(examples, dataclasses.replace(config, hard_negative_weight=4.0))
    assert np.array_equal(weights, [4.0 if k == "hard_negative" else 1.0 for k in kinds])
    near = [i for i, k in enumerate(kinds) if k == "hard_negative"]
    mean_near = {}
    for w in (1.0, 8.0):
        fitted = fit(examples, dataclasses.replace(config, hard_negative_weight=w), tiny_factory(tiny_whisper),
                     progress=False)
        mean_near[w] = float(np.mean([r.score for r in predict_audio(fitted.model, fitted.feature_extractor,
                                                                      [audios[i] for i in near], 2.0)]))
    assert mean_near[8.0] < mean_near[1.0], mean_near

    without_kinds = LabelledAudio.from_arrays(audios, labels, bounds)
    with caplog.at_level("WARNING"):
        assert clip_weights(without_kinds, dataclasses.replace(config, hard_negative_weight=4.0)) is None
    assert "hard_negative_weight=4 has no effect" in caplog.text
    with pytest.raises(ValueError, match=r"FinetuneConfig\.hard_negative_weight=0.0 is invalid"):
        FinetuneConfig(hard_negative_weight=0.0)
