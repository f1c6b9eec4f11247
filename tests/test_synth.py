"""heardet.synth: layout, labels, bounds, determinism, resumability and config validation.

The TTS tests make one tiny dataset (6 train + 4 test clips, espeak-ng and festival) per module
and copy it where a test changes it; RHVoice gets a tiny dataset of its own; planning tests need no
TTS at all.
"""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from heardet.augment import Banks
from heardet.synth import SynthConfig, SynthReport, check_tts, synthesize, voices
from heardet.synth.generate import render
from heardet.synth.plan import plan_clip
from heardet.synth.text import POSITIONS, count, near_misses

MISSING = [tool for tool in ("espeak-ng", "festival") if shutil.which(tool) is None]
needs_tts = pytest.mark.skipif(
    bool(MISSING), reason=f"TTS tools missing: {', '.join(MISSING)} (apt-get install espeak-ng festival festvox-ru)")

needs_rhvoice = pytest.mark.skipif(
    not voices.rhvoice_installed(), reason="RHVoice missing (apt-get install rhvoice rhvoice-russian, Debian non-free)")

TINY = SynthConfig(n_train=6, n_test=4, seed=7, workers=1)
THREE_ENGINES = SynthConfig(festival_fraction=0.34, rhvoice_fraction=0.33)


def rows_of(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> tuple[Path, SynthReport]:
    if MISSING:
        pytest.skip(f"TTS tools missing: {', '.join(MISSING)}")
    root = tmp_path_factory.mktemp("synth") / "data"
    return root, synthesize(root, TINY, progress=False)


@pytest.fixture
def copy_of(made, tmp_path) -> Path:
    return Path(shutil.copytree(made[0], tmp_path / "copy"))


@needs_tts
def test_dataset_has_the_competition_layout(made):
    root, report = made
    assert sorted(p.stem for p in (root / "wav_train").glob("*.wav")) == [f"train_{i:04d}" for i in range(1, 7)]
    assert sorted(p.stem for p in (root / "wav_test").glob("*.wav")) == [f"test_{i:04d}" for i in range(1, 5)]
    for name in ("word_bounds.json", "test_word_bounds.json", "test_labels.csv", "manifest.jsonl",
                 "synth_config.json"):
        assert (root / name).is_file(), f"{name} missing"
    assert not (root / ".tmp").exists() and not (root / ".cache").exists(), "staging or cache left behind"
    assert len(Banks.of_dataset(root).rirs) == 32 and len(Banks.of_dataset(root).speech) == 24
    assert (report.n_generated, report.n_skipped) == (10, 0)


@needs_tts
def test_labels_and_bounds_agree_with_the_manifest(made):
    root, report = made
    rows = rows_of(root)
    assert len(rows) == 10 and len({r["id"] for r in rows}) == 10
    bounds = json.loads((root / "word_bounds.json").read_text())
    assert bounds == {r["id"]: r["bounds"] for r in rows if r["split"] == "train" and r["label"] == 1}
    test_bounds = json.loads((root / "test_word_bounds.json").read_text())
    assert test_bounds == {r["id"]: r["bounds"] for r in rows if r["split"] == "test" and r["label"] == 1}
    with open(root / "test_labels.csv", newline="") as handle:
        labels = {row["id"]: int(row["label"]) for row in csv.DictReader(handle)}
    assert labels == {r["id"]: r["label"] for r in rows if r["split"] == "test"}
    assert report.positives_train == len(bounds) and report.positives_test == sum(labels.values())
    for r in rows:
        assert (r["kind"] == "positive") == (r["label"] == 1) == (r["middle"] == TINY.phrase), r["id"]


@needs_tts
def test_clips_are_16k_mono_audible_and_bounds_lie_inside(made):
    root, _ = made
    for r in rows_of(root):
        info = sf.info(root / f"wav_{r['split']}" / f"{r['id']}.wav")
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16"), r["id"]
        audio, _ = sf.read(root / f"wav_{r['split']}" / f"{r['id']}.wav")
        assert 1.0 <= info.duration <= 10.0, f"{r['id']} lasts {info.duration:.2f} s"
        assert abs(info.duration - r["duration"]) < 0.002
        assert np.abs(audio).max() > 0.02, f"{r['id']} is (nearly) silent"
        assert len(r["bounds"]) == r["repeats"] >= 1
        for start, end in r["bounds"]:
            assert 0.0 < start < end < info.duration and 0.15 < end - start < 3.0, f"{r['id']} bounds {r['bounds']}"
            # the middle is speech: louder than the noise floor in the pause before it
            inside = np.abs(audio[int(start * 16000) : int(end * 16000)]).max()
            assert inside > 0.01, f"{r['id']} is quiet inside its bounds"


@needs_tts
def test_every_clip_is_spliced_the_same_way_whatever_its_label(made):
    root, _ = made
    for r in rows_of(root):
        roles = [s["role"] for s in r["segments"] if s["role"] != "hesitation"]
        carriers = {"alone": [], "start": [1], "end": [0], "middle": [0, 1]}[r["position"]]
        middles = ["middle"] * r["repeats"]
        expected = ["carrier"] * (0 in carriers) + middles + ["carrier"] * (1 in carriers)
        assert roles == expected, f"{r['id']}: {roles} for position {r['position']}"
        middle = [s for s in r["segments"] if s["role"] == "middle"]
        assert [[s["start"], s["end"]] for s in middle] == r["bounds"] and {s["text"] for s in middle} == {r["middle"]}
        starts = [s["start"] for s in r["segments"]]
        assert starts == sorted(starts) and all(a["end"] < b["start"] for a, b in zip(r["segments"], r["segments"][1:]))
        assert {"seed", "gain_db"} <= set(r["augmentation"]), r["augmentation"]
        assert r["voice"].startswith(r["engine"] + "/") and r["frame"].startswith("f")


@needs_tts
def test_a_phrase_said_twice_gets_two_bounds_each_around_speech(tmp_path):
    config = replace(TINY, festival_fraction=0.0)
    near = near_misses(config.phrase)
    plan = next(p for i in range(400) if (p := plan_clip(config, near, "train", i, Banks())).words.repeats == 2
                and p.label == 1)
    audio, row = render(plan, None, Banks())
    assert row["text"].count(config.phrase) == 2 and len(row["bounds"]) == 2, row["text"]
    (s1, e1), (s2, e2) = row["bounds"]
    assert e1 < s2, row["bounds"]
    gap = audio[int(e1 * 16000) + 80 : int(s2 * 16000) - 80]
    for start, end in row["bounds"]:
        assert np.abs(audio[int(start * 16000) : int(end * 16000)]).max() > 5 * np.abs(gap).max() + 1e-3


@needs_tts
def test_festival_cuts_a_middle_out_of_its_sentence_at_its_word_times(tmp_path):
    context, phrase = "алло, не слышу, не слышу вас, повторите", "не слышу"
    voices.festival_batch([phrase, context], tmp_path)
    found = voices.festival_words(tmp_path, context)
    assert [w for w, _, _ in found] == ["алло", "не", "слышу", "не", "слышу", "вас", "повторите"]
    assert all(a <= b for _, a, b in found) and [b for _, _, b in found] == sorted(b for _, _, b in found)
    alone = voices.say(voices.Voice("festival", voices.FESTIVAL_BASE, 1.0, 1.0, 0), phrase, 1.0, tmp_path)
    first, second = (voices.say_in_context(phrase, context, k, 1.0, tmp_path) for k in (0, 1))
    whole = voices.read_wav(voices.festival_path(tmp_path, context), "festival")
    for cut in (first, second):  # the phrase's own span of the sentence, not the phrase said alone
        assert 0.3 * 16000 < len(cut) < len(whole) / 2
        assert len(cut) != len(alone) or not np.allclose(cut, alone)
    assert voices.say_in_context(phrase, context, 2, 1.0, tmp_path) is None, "there is no third occurrence"
    assert voices.say_in_context("не слышно", context, 0, 1.0, tmp_path) is None
    fast = voices.say_in_context(phrase, context, 0, 1.3, tmp_path)
    assert abs(len(fast) - len(first) / 1.3) < 0.05 * len(first)


@needs_rhvoice
def test_rhvoice_voices_its_own_speakers_with_bounds_around_the_phrase(tmp_path):
    quiet_room = {f"{k}_prob": 0.0 for k in ("noise", "speech", "reverb", "telephone", "codec", "clipping")}
    config = replace(TINY, festival_fraction=0.0, rhvoice_fraction=1.0, n_train=4, n_test=2, positive_fraction=1.0,
                     **quiet_room)
    report = synthesize(tmp_path / "data", config, progress=False)
    rows = rows_of(tmp_path / "data")
    assert report.n_generated == 6 and {r["engine"] for r in rows} == {"rhvoice"}
    for r in rows:
        base = r["voice_settings"]["base"]
        assert (base in voices.RHVOICE_TEST_VOICES) == (r["split"] == "test") and r["voice"].startswith(f"rhvoice/{base}/")
        audio, sr = sf.read(tmp_path / "data" / f"wav_{r['split']}" / f"{r['id']}.wav", dtype="float32")
        quiet = np.abs(audio[: int(r["segments"][0]["start"] * sr) - 160]).max()
        for start, end in r["bounds"]:
            assert np.abs(audio[int(start * sr) : int(end * sr)]).max() > 5 * quiet, (r["id"], start, end)


@needs_rhvoice
def test_rhvoice_follows_its_rate_and_refuses_a_speaker_it_lacks():
    slow, fast = (voices.rhvoice("не слышу", "irina", rate) for rate in (70, 140))
    assert 1.7 < len(slow) / len(fast) < 2.3, (len(slow), len(fast))
    with pytest.raises(RuntimeError, match="'nobody' is not installed.*rhvoice-russian"):
        voices.rhvoice("не слышу", "nobody", 100)  # RHVoice-test itself would say it in another voice


@needs_tts
def test_festival_middles_in_a_dataset_are_cut_from_their_sentences(made):
    rows = rows_of(made[0])
    assert {r["engine"] for r in rows} == {"festival", "espeak-ng"}
    for r in rows:
        middles = [s for s in r["segments"] if s["role"] == "middle"]
        assert [s.get("in_context", False) for s in middles] == [r["engine"] == "festival"] * len(middles), r


def test_planned_positives_and_negatives_share_carriers_voices_and_pauses():
    config = SynthConfig(n_train=400, n_test=0)
    near = near_misses(config.phrase, config.hard_negatives)
    plans = [plan_clip(config, near, "train", i, Banks()) for i in range(400)]
    by_label = {label: [p for p in plans if p.label == label] for label in (0, 1)}
    assert 180 <= len(by_label[1]) <= 220, "positive share far from positive_fraction"
    assert {p.words.kind for p in by_label[0]} == {"hard_negative", "negative"}
    for label, group in by_label.items():
        assert {p.words.position for p in group} == set(POSITIONS), f"label {label} lacks a position"
        assert {p.voice.engine for p in group} == {"festival", "espeak-ng"}
        assert 0.15 < np.mean([x for p in group for x in p.pauses_s]) < 0.25
        assert {p.words.tempo for p in group} == {"normal", "fast", "slow"} and {p.words.repeats for p in group} == {1, 2}
    for p in plans:
        assert count(p.words.text, config.phrase) == p.label * p.words.repeats, p.words.text


def test_a_custom_phrase_gets_derived_near_misses_that_never_contain_it():
    config = SynthConfig(phrase="алло", hard_negatives=("аллея",), n_train=200, n_test=0)
    near = near_misses(config.phrase, config.hard_negatives)
    assert "аллея" in near and near and not any(count(n, "алло") for n in near)
    for i in range(200):  # carriers that say «алло» must be avoided for negatives
        plan = plan_clip(config, near, "train", i, Banks())
        assert count(plan.words.text, "алло") == plan.label * plan.words.repeats, plan.words.text


def test_the_test_split_uses_voices_and_carrier_frames_the_train_split_never_uses():
    config = replace(THREE_ENGINES, n_train=3000, n_test=1000)
    near = near_misses(config.phrase)
    plans = {split: [plan_clip(config, near, split, i, Banks()) for i in range(n)]
             for split, n in (("train", 3000), ("test", 1000))}
    voices_of = {split: {p.voice.id for p in group} for split, group in plans.items()}
    frames_of = {split: {p.words.frame for p in group} for split, group in plans.items()}
    assert not voices_of["train"] & voices_of["test"], sorted(voices_of["train"] & voices_of["test"])[:5]
    assert not frames_of["train"] & frames_of["test"], sorted(frames_of["train"] & frames_of["test"])[:5]
    for engine in ("espeak-ng", "rhvoice"):  # festival has one base speaker: its formant bins are split instead
        bases = {split: {p.voice.base for p in group if p.voice.engine == engine} for split, group in plans.items()}
        assert bases["train"] and bases["test"] and not bases["train"] & bases["test"], (engine, bases)
    engines = [p.voice.engine for p in plans["train"]]
    assert {e: round(engines.count(e) / len(engines), 2) for e in set(engines)} == {
        "festival": 0.34, "rhvoice": 0.33, "espeak-ng": 0.33}
    assert len(voices_of["train"]) > 100 and len(frames_of["test"]) >= 10


@needs_tts
def test_same_seed_gives_identical_rows_and_audio_whatever_the_workers(made, tmp_path):
    root, _ = made
    again = tmp_path / "again"
    synthesize(again, replace(TINY, workers=2), progress=False)
    assert rows_of(again) == rows_of(root)
    for r in rows_of(root):
        rel = f"wav_{r['split']}/{r['id']}.wav"
        assert (again / rel).read_bytes() == (root / rel).read_bytes(), f"{rel} differs"


@needs_tts
def test_a_rerun_skips_every_clip_already_made(copy_of):
    before = {p.name: p.stat().st_mtime_ns for p in copy_of.glob("wav_*/*.wav")}
    report = synthesize(copy_of, TINY, progress=False)
    assert (report.n_generated, report.n_skipped) == (0, 10)
    assert {p.name: p.stat().st_mtime_ns for p in copy_of.glob("wav_*/*.wav")} == before


@needs_tts
def test_a_deleted_wav_and_a_torn_manifest_line_regenerate_only_that_clip(copy_of):
    victim = copy_of / "wav_train" / "train_0003.wav"
    original = victim.read_bytes()
    victim.unlink()
    with open(copy_of / "manifest.jsonl", "a", encoding="utf-8") as handle:
        handle.write('{"id": "train_00')  # an interrupted append
    report = synthesize(copy_of, TINY, progress=False)
    assert (report.n_generated, report.n_skipped) == (1, 9)
    assert victim.read_bytes() == original
    assert len(rows_of(copy_of)) == 10


@needs_tts
def test_more_clips_extend_the_dataset_and_fewer_are_refused(copy_of):
    report = synthesize(copy_of, replace(TINY, n_train=7), progress=False)
    assert (report.n_generated, report.n_skipped) == (1, 10)
    with pytest.raises(ValueError, match="more clips than asked"):
        synthesize(copy_of, TINY, progress=False)


@needs_tts
def test_other_settings_are_refused_in_the_same_directory(copy_of):
    with pytest.raises(ValueError, match=r"changed: seed.*new out directory"):
        synthesize(copy_of, replace(TINY, seed=8), progress=False)


def test_a_foreign_dataset_directory_is_refused(tmp_path, write_audio):
    if MISSING:
        pytest.skip("TTS tools missing")
    write_audio("x.wav", directory=tmp_path / "data" / "wav_train")
    with pytest.raises(ValueError, match="did not make"):
        synthesize(tmp_path / "data", TINY, progress=False)


@pytest.mark.parametrize("field, value", [
    ("phrase", "  "), ("n_train", -1), ("n_test", 1.5), ("positive_fraction", 1.2),
    ("hard_negative_fraction", -0.1), ("festival_fraction", "half"), ("snr_db", (30.0, 5.0)),
    ("gain_db", (0.0,)), ("noise_prob", 2), ("telephone_prob", True), ("reverb_prob", float("nan")),
    ("codec_prob", 1.5), ("speech_prob", -1), ("clipping_prob", "x"),
    ("hard_negatives", ("я не слышу",)), ("hard_negatives", "не слышно"), ("seed", -3), ("workers", 0),
    ("rhvoice_fraction", 1.5), ("rhvoice_fraction", 0.6),  # 0.6 + festival's 0.5 > 1
])
def test_config_validation_names_the_field_and_the_value(field, value):
    with pytest.raises(ValueError, match=rf"SynthConfig\.{field}=.* is invalid; allowed: "):
        SynthConfig(**{field: value})


def test_nothing_to_generate_is_refused():
    with pytest.raises(ValueError, match="n_train"):
        SynthConfig(n_train=0, n_test=0)


def test_config_hash_ignores_counts_and_workers_but_not_settings():
    base = SynthConfig()
    assert base.clip_hash() == SynthConfig(n_train=5, n_test=1, workers=1).clip_hash()
    assert base.clip_hash() != SynthConfig(snr_db=(0.0, 30.0)).clip_hash()


def test_a_dataset_made_before_rhvoice_keeps_its_hash_and_rhvoice_changes_it():
    assert SynthConfig().clip_hash() == "f5da83f3a6501582", "generator version 3's default data would be refused"
    assert THREE_ENGINES.clip_hash() != SynthConfig(festival_fraction=0.34).clip_hash()


def test_train_speech_prob_changes_the_train_split_only(tmp_path):
    config = SynthConfig(n_train=400, n_test=400)
    more = replace(config, train_speech_prob=0.6)
    near = near_misses(config.phrase)
    (tmp_path / "speech").mkdir()
    for k in range(4):  # the plans name a recording of the bank; its content is read only when rendering
        (tmp_path / "speech" / f"speech_{k:03d}.wav").touch()
    banks = Banks(tmp_path)

    def plans(c, split):
        return [plan_clip(c, near, split, i, banks) for i in range(400)]

    assert plans(config, "test") == plans(more, "test"), "the test split must not change"
    share = {c.train_speech_prob: np.mean([p.augment.speech is not None for p in plans(c, "train")])
             for c in (config, more)}
    assert 0.18 < share[-1.0] < 0.32 and 0.52 < share[0.6] < 0.68, share
    assert more.clip_hash() != config.clip_hash() == SynthConfig().clip_hash()
    with pytest.raises(ValueError, match="train_speech_prob"):
        SynthConfig(train_speech_prob=1.5)


def test_check_tts_names_missing_rhvoice_speakers_and_the_non_free_section(monkeypatch, tmp_path):
    (tmp_path / "irina").mkdir()
    monkeypatch.setattr(voices, "RHVOICE_DIRS", (str(tmp_path),))
    monkeypatch.setattr(voices.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(voices.subprocess, "run", lambda *a, **k: type("Done", (), {"stdout": "5  ru  M  russian"}))
    check_tts(festival=False)  # RHVoice not asked for
    with pytest.raises(RuntimeError, match=r"speakers aleksandr, anna.*apt-get install -y rhvoice-russian.*non-free"):
        check_tts(festival=False, rhvoice=True)
    monkeypatch.setattr(voices.shutil, "which", lambda name: None if name == "RHVoice-test" else f"/usr/bin/{name}")
    with pytest.raises(RuntimeError, match=r"rhvoice, rhvoice-russian.*apt-get install -y rhvoice rhvoice-russian"):
        check_tts(festival=False, rhvoice=True)


def test_check_tts_names_missing_tools_and_the_install_command(monkeypatch):
    monkeypatch.setattr(voices.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match=r"espeak-ng.*festival.*apt-get install -y"):
        check_tts()
