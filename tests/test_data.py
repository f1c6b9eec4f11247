import json

import pytest
from click.testing import CliRunner

from heardet.cli import main
from heardet.data import DataError, load_dataset, parse_bounds, validate_dataset


@pytest.mark.parametrize(
    "entry,expected",
    [
        ([[1.0, 2.0]], ((1.0, 2.0),)),
        ([1, 2], ((1.0, 2.0),)),
        ({"start": 1, "end": 2.5}, ((1.0, 2.5),)),
        ([{"start": 0, "end": 1}, {"start": 2, "end": 3}], ((0.0, 1.0), (2.0, 3.0))),
        ([[0, 1], [2, 3]], ((0.0, 1.0), (2.0, 3.0))),
    ],
)
def test_every_accepted_bounds_shape_parses(entry, expected):
    assert parse_bounds(entry, "x") == expected


@pytest.mark.parametrize("entry", ["1-2", [], [[2, 1]], [1, 2, 3], {"from": 1, "to": 2}, [[1, "a"]], [[-1, 2]]])
def test_malformed_bounds_are_rejected_showing_the_entry(entry):
    with pytest.raises(DataError) as info:
        parse_bounds(entry, "clip_7")
    assert "clip_7" in str(info.value) and json.dumps(entry, ensure_ascii=False)[:10] in str(info.value)


def test_labels_come_from_word_bounds_keys(tiny_dataset):
    ds = load_dataset(tiny_dataset)
    assert {c.id: c.label for c in ds.train} == {f"train_{i}": int(i < 3) for i in range(6)}
    assert ds.test_labelled and [c.label for c in ds.test] == [1, 0, 1, 0]


def test_word_bounds_keys_may_carry_the_extension(tiny_dataset):
    (tiny_dataset / "word_bounds.json").write_text(json.dumps({"train_4.wav": [0.1, 0.5]}))
    assert [c.id for c in load_dataset(tiny_dataset).train if c.label] == ["train_4"]


def test_missing_directory_says_how_to_make_one(tmp_path):
    with pytest.raises(DataError, match="heardet synth"):
        load_dataset(tmp_path / "nope")


def test_bad_test_label_names_file_and_line(tiny_dataset):
    (tiny_dataset / "test_labels.csv").write_text("id,label\ntest_0,yes\n")
    with pytest.raises(DataError, match=r"test_labels.csv:2"):
        load_dataset(tiny_dataset)


def test_validate_reports_broken_files_orphans_and_duplicates(tiny_dataset):
    (tiny_dataset / "wav_train" / "broken.wav").write_bytes(b"garbage" * 100)
    (tiny_dataset / "wav_test" / "copy.wav").write_bytes((tiny_dataset / "wav_test" / "test_1.wav").read_bytes())
    bounds = json.loads((tiny_dataset / "word_bounds.json").read_text())
    bounds["ghost"] = [[0, 1]]
    (tiny_dataset / "word_bounds.json").write_text(json.dumps(bounds))
    (tiny_dataset / "test_labels.csv").write_text("id,label\ntest_0,1\ntest_1,0\ntest_2,1\ntest_3,0\ncopy,0\n")

    report = validate_dataset(tiny_dataset, progress=False)
    train = report.splits[0]
    assert train.n_clips == 7 and "wav_train/broken.wav" in train.unreadable
    assert report.orphan_bounds == ["ghost"]
    assert sorted(report.duplicate_content[0]) == ["wav_test/copy.wav", "wav_test/test_1.wav"]
    assert not report.ok


def test_validate_command_prints_report_and_exit_code(tiny_dataset):
    result = CliRunner().invoke(main, ["validate", str(tiny_dataset), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "train: 6 clips (label 0: 3, label 1: 3)" in result.output
    assert "16000 Hz × 4" in result.output and "OK" in result.output
    (tiny_dataset / "wav_test" / "bad.wav").write_bytes(b"")
    (tiny_dataset / "test_labels.csv").write_text("id,label\ntest_0,1\ntest_1,0\ntest_2,1\ntest_3,0\nbad,0\n")
    result = CliRunner().invoke(main, ["validate", str(tiny_dataset), "--no-progress"])
    assert result.exit_code == 1 and "UNREADABLE wav_test/bad.wav" in result.output


def test_validate_says_nothing_can_be_trained_from_a_folder_without_wav_train_or_bounds(tiny_dataset):
    for clip in (tiny_dataset / "wav_train").iterdir():
        clip.unlink()
    (tiny_dataset / "wav_train").rmdir()
    (tiny_dataset / "word_bounds.json").unlink()
    result = CliRunner().invoke(main, ["validate", str(tiny_dataset), "--no-progress"])
    assert result.exit_code == 1, result.output
    assert "nothing can be trained from it: no audio in wav_train/ and no word_bounds.json" in result.output
    assert "training needs wav_train/<id>.wav" in result.output and "OK" not in result.output


def test_validate_says_train_clips_without_bounds_are_all_label_0(tiny_dataset):
    (tiny_dataset / "word_bounds.json").unlink()
    report = validate_dataset(tiny_dataset, progress=False)
    assert not report.ok and "every clip is label 0" in report.untrainable


def test_audio_outside_the_layout_is_pointed_to_where_it_belongs(tmp_path, write_audio):
    write_audio("call.wav", directory=tmp_path / "calls")
    result = CliRunner().invoke(main, ["validate", str(tmp_path / "calls"), "--no-progress"])
    assert result.exit_code == 2, result.output
    assert "1 audio file(s) directly in" in result.output and "belong in wav_train/" in result.output


def _manifest(root, rows):
    (root / "manifest.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def test_test_bounds_and_manifest_facts_ride_along_with_the_clips(tiny_dataset):
    (tiny_dataset / "test_word_bounds.json").write_text(json.dumps({"test_0": [[0.1, 0.4], [0.6, 0.9]]}))
    _manifest(tiny_dataset, [{"id": "train_0", "engine": "festival", "voice": "festival/x/f0", "frame": "f001"}])
    ds = load_dataset(tiny_dataset)
    assert ds.test[0].bounds == ((0.1, 0.4), (0.6, 0.9)) and ds.test[1].bounds == ()
    assert ds.train[0].meta == {"engine": "festival", "voice": "festival/x/f0", "frame": "f001"}
    assert ds.train[1].meta == {}


def test_test_bounds_on_a_clip_labelled_0_are_refused(tiny_dataset):
    (tiny_dataset / "test_word_bounds.json").write_text(json.dumps({"test_1": [[0.1, 0.4]]}))
    with pytest.raises(DataError, match=r"test_word_bounds.json: bounds for 1 clip.*test_1"):
        load_dataset(tiny_dataset)


def test_validate_shows_the_diversity_and_warns_about_shared_and_dominant_voices(tiny_dataset):
    rows = [{"id": f"train_{i}", "engine": "espeak-ng", "voice": "espeak-ng/ru+m1/f0", "frame": "f001",
             "kind": "hard_negative" if i >= 3 else "positive", "middle": "не слышно" if i >= 3 else "не слышу",
             "augmentation": {"seed": 1, "codec": "mp3", "gain_db": 0.0}} for i in range(6)]
    rows += [{"id": f"test_{i}", "engine": "festival", "voice": "espeak-ng/ru+m1/f0" if i == 0 else f"v{i}",
              "frame": "f004", "augmentation": {"seed": 1, "gain_db": 0.0}} for i in range(4)]
    _manifest(tiny_dataset, rows)
    text = validate_dataset(tiny_dataset, progress=False).render()
    assert "diversity (from manifest.jsonl)" in text
    assert "espeak-ng 6 (100%)" in text and "не слышно 3" in text and "codec mp3 6" in text, text
    assert "WARNING 1 test voices also occur in train" in text and "espeak-ng/ru+m1/f0" in text, text
    assert "carrier frames also occur" not in text
    assert "says 6 of 6" not in text  # too few clips to call a voice dominant


def test_diversity_flags_a_dominant_voice():
    from heardet.diversity import diversity

    metas = {"train": [{"voice": "a" if i < 30 else f"v{i}"} for i in range(100)], "test": []}
    report = diversity(metas)
    assert any("voice a says 30 of 100" in w for w in report.warnings), report.warnings
    assert diversity({"train": [{}, {}], "test": []}) is None


def test_a_subsample_keeps_the_label_mix_and_the_order_and_is_the_same_every_time(tmp_path):
    from heardet.data import Clip, subsample_clips

    clips = [Clip(f"c{i:02d}", tmp_path / f"c{i:02d}.wav", "train", int(i % 4 == 0), ()) for i in range(40)]
    picked = subsample_clips(clips, 20)
    assert len(picked) == 20 and sum(c.label for c in picked) == 5, "a quarter positive, as in the whole"
    assert [c.id for c in picked] == sorted(c.id for c in picked)
    assert [c.id for c in subsample_clips(clips, 20)] == [c.id for c in picked]
    assert subsample_clips(clips, 0) == clips and subsample_clips(clips, 40) == clips
