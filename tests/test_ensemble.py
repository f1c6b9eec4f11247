"""Approach 4 and promotion, on real registered models (rule members over the fake ASR)."""

import mlflow
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from test_approaches_text import run_entrypoint

from heardet.approaches.ensemble import blend_csvs, vote


def register_rule(data, tmp_path, rule, name):
    run_entrypoint("transcribe", ["--data", str(data), "--rule", rule, "--register-as", name,
                                  "--out", str(tmp_path / "out")])
    return f"models:/{name}/1"


def test_majority_vote_and_tie_broken_by_mean_score():
    labels = np.array([[1, 0, 1, -1], [1, 1, 0, -1], [0, 0, -1, -1]])
    scores = np.array([[0.9, 0.2, 0.8, np.nan], [0.8, 0.7, 0.1, np.nan], [0.1, 0.3, np.nan, np.nan]])
    errors = [["", "", "", "bad"], ["", "", "", "bad"], ["", "", "x", "bad"]]
    out = vote(labels, scores, errors)
    assert [p.label for p in out] == [1, 0, 0, -1]  # 2:1, 1:2, tie 1:1 with mean 0.45, nobody could read
    assert out[3].error == "bad"


def test_ensemble_entrypoint_votes_registers_and_survives_deleted_members(fake_asr, phrase_dataset, mlflow_store, tmp_path):
    right = register_rule(phrase_dataset, tmp_path, "не слыш", "m-right")
    always = register_rule(phrase_dataset, tmp_path, "слыш", "m-always")       # fires on every clip
    never = register_rule(phrase_dataset, tmp_path, "не вижу", "m-never")      # fires on none
    run = run_entrypoint("ensemble", ["--members", ",".join([right, always, never]), "--data", str(phrase_dataset),
                                      "--out", str(tmp_path / "out")])
    assert run.data.tags["member_1_version"] == "m-always/1"
    assert run.data.metrics["test_macro_f1"] == 1.0, "2 of 3 members agree with the truth on every clip"
    blended = pd.read_csv(tmp_path / "out" / "approach_4_blended.csv")
    assert blended.label.tolist() == [1, 1, 0, 0]

    client = mlflow.MlflowClient()
    for name in ("m-right", "m-always", "m-never"):
        client.delete_registered_model(name)
    model = mlflow.pyfunc.load_model("models:/heardet-ensemble/1")
    wavs = sorted((phrase_dataset / "wav_test").glob("*.wav"))
    out = model.predict(pd.DataFrame({"audio": [wavs[0].read_bytes(), wavs[2].read_bytes(), b"junk"]}))
    assert out.label.tolist() == [1, 0, -1]
    vote_columns = [c for c in out.columns if c.startswith("vote_")]
    assert len(vote_columns) == 3 and out[vote_columns[1]].tolist() == [1, 1, -1]


def test_promote_refuses_a_worse_candidate_unless_forced(fake_asr, phrase_dataset, mlflow_store, tmp_path):
    from heardet.mlops.registry import PromotionRefused, current_production, promote

    register_rule(phrase_dataset, tmp_path, "не слыш", "heardet-rule")   # version 1: right
    register_rule(phrase_dataset, tmp_path, "не вижу", "heardet-rule")   # version 2: never fires
    first = promote("heardet-rule", 1, phrase_dataset, progress=False)
    assert first.promoted and current_production("heardet-rule") == "1"
    with pytest.raises(PromotionRefused, match="worse than Production"):
        promote("heardet-rule", 2, phrase_dataset, progress=False)
    assert current_production("heardet-rule") == "1"
    forced = promote("heardet-rule", 2, phrase_dataset, force=True, progress=False)
    assert forced.previous == "1" and forced.candidate_f1 < forced.previous_f1
    assert mlflow.MlflowClient().get_model_version("heardet-rule", "2").current_stage == "Production"
    assert mlflow.MlflowClient().get_model_version("heardet-rule", "1").current_stage == "Archived"


def test_blend_majority_votes_and_refuses_mismatched_ids(tmp_path):
    from heardet.cli import main

    for name, labels in {"a": [1, 0, 1], "b": [1, 1, 0], "c": [0, 0, 1]}.items():
        pd.DataFrame({"id": ["x", "y", "z"], "label": labels}).to_csv(tmp_path / f"{name}.csv", index=False)
    assert blend_csvs([tmp_path / f"{n}.csv" for n in "abc"]).label.tolist() == [1, 0, 1]
    pd.DataFrame({"id": ["x", "y", "w"], "label": [1, 1, 1]}).to_csv(tmp_path / "d.csv", index=False)
    result = CliRunner().invoke(main, ["blend", str(tmp_path / "a.csv"), str(tmp_path / "d.csv"), "-o",
                                       str(tmp_path / "o.csv")])
    assert result.exit_code == 2 and "ids differ" in result.output


def test_promoting_an_ensemble_below_one_of_its_members_warns_naming_that_member(fake_asr, phrase_dataset,
                                                                                 mlflow_store, tmp_path, caplog):
    from test_approaches_text import entrypoint

    right = register_rule(phrase_dataset, tmp_path, "не слыш", "m-right")
    always = register_rule(phrase_dataset, tmp_path, "слыш", "m-always")   # fires on every clip
    also_always = register_rule(phrase_dataset, tmp_path, "я вас", "m-also-always")
    never = register_rule(phrase_dataset, tmp_path, "не вижу", "m-never")
    ensemble_args = ["--data", str(phrase_dataset), "--out", str(tmp_path / "out")]
    run_entrypoint("ensemble", ["--members", ",".join([right, always, never]), *ensemble_args])        # version 1
    run_entrypoint("ensemble", ["--members", ",".join([right, always, also_always]), *ensemble_args])  # version 2

    result = CliRunner().invoke(entrypoint("promote"), ["--name", "heardet-ensemble", "--version", "1"])
    assert result.exit_code == 0 and "WARNING" not in result.output, "version 1 is as good as its best member"
    caplog.clear()
    result = CliRunner().invoke(entrypoint("promote"), ["--name", "heardet-ensemble", "--version", "2"])
    assert result.exit_code == 0, result.output
    assert "WARNING: its test macro F1 0.3333 is below that of its member m-right/1 (1.0000" in result.output
    assert "m-always" not in result.output, "only members above the ensemble are named"
    assert [r.levelname for r in caplog.records if "m-right/1" in r.getMessage()] == ["WARNING"]
    promote_run = mlflow.last_active_run()
    text = mlflow.artifacts.load_text(f"runs:/{promote_run.info.run_id}/promotion.txt")
    assert "m-right/1" in text


def test_the_chosen_blend_is_never_worse_than_the_best_member_on_out_of_fold_scores():
    from heardet.approaches.ensemble import choose_blend
    from heardet.metrics import score

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=200)
    good = np.clip(labels * 0.7 + rng.normal(0.15, 0.2, 200), 0, 1)  # a strong member
    weak = np.clip(labels * 0.2 + rng.normal(0.4, 0.3, 200), 0, 1)
    coin = rng.random(200)
    blend = choose_blend(np.stack([good, weak, coin]), labels, [0.5, 0.5, 0.5], ["good", "weak", "coin"])
    best_member = max(score(labels, (m >= 0.5).astype(int)).macro_f1 for m in (good, weak, coin))
    assert blend.candidates[0][1] >= best_member - 1e-6
    assert {name for name, _ in blend.candidates} >= {"good alone", "majority vote", "mean of scores"}
    assert blend.chosen != "majority vote", "a vote with a coin-flip member should not beat the strong member"


def test_a_member_alone_wins_a_tie_and_the_weighted_blend_reproduces_it():
    from heardet.approaches.ensemble import choose_blend, weighted

    labels = np.array([0, 1] * 10)
    perfect = labels.astype(float)
    blend = choose_blend(np.stack([perfect, perfect]), labels, [0.5, 0.5], ["a", "b"])
    assert blend.chosen == "a alone" and blend.weights == (1.0, 0.0)
    out = weighted(np.stack([perfect, 1 - perfect]), blend.weights, blend.threshold, [[""] * 20] * 2)
    assert [p.label for p in out] == labels.tolist()


def test_a_blend_that_wins_by_less_than_the_margin_gives_way_to_the_best_member():
    from heardet.approaches.ensemble import BLEND_MARGIN, choose_blend

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, size=400)
    strong = np.clip(labels * 0.6 + rng.normal(0.2, 0.2, 400), 0, 1)
    echo = np.clip(strong + rng.normal(0, 0.02, 400), 0, 1)  # nearly the same member: a blend adds ~nothing
    blend = choose_blend(np.stack([strong, echo]), labels, [0.5, 0.5], ["a", "b"])
    scores = dict(blend.candidates)
    best_alone = max(scores["a alone"], scores["b alone"])
    assert blend.chosen.endswith(" alone") or scores[blend.chosen] >= best_alone + BLEND_MARGIN


def test_an_ensemble_says_where_the_phrase_is_from_its_heaviest_member_that_found_it():
    from heardet.approaches.ensemble import Blend, phrase_times
    from heardet.mlops.contract import Prediction

    nan = float("nan")
    labels = np.array([[1, 1, 0, 1], [1, 0, 0, 1]])  # [members, rows]; member 0 gives no times
    times = np.array([[[nan, nan]] * 4, [[1.0, 1.5], [nan, nan], [nan, nan], [2.0, 2.4]]])
    combined = [Prediction(1, 0.9), Prediction(1, 0.6), Prediction(0, 0.1), Prediction(1, 0.8)]
    heavy_second = Blend("weighted", (0.2, 0.8), 0.5)
    got = phrase_times(combined, labels, times, heavy_second)
    assert got[0].tolist() == [1.0, 1.5] and got[3].tolist() == [2.0, 2.4]
    assert np.isnan(got[1]).all(), "no member that found the phrase on row 1 says where"
    assert np.isnan(got[2]).all(), "label 0: no phrase times"
    alone = Blend("weighted", (1.0, 0.0), 0.5)  # member 0 alone: its label decides, member 1's times still serve
    assert phrase_times(combined, labels, times, alone)[0].tolist() == [1.0, 1.5]


def test_a_mean_is_judged_at_a_threshold_chosen_on_rows_it_is_not_scored_on():
    from heardet.approaches.ensemble import choose_blend, cross_fitted_f1
    from heardet.cv import best_threshold
    from heardet.metrics import score

    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, size=300)
    noise = rng.random(300)  # no signal: any edge a threshold finds on these rows is luck
    in_sample = score(labels, (noise >= best_threshold(labels, noise)).astype(int)).macro_f1
    assert cross_fitted_f1(labels, noise) < in_sample
    assert cross_fitted_f1(labels, labels.astype(float)) == 1.0
    member = np.clip(labels * 0.5 + rng.normal(0.25, 0.2, 300), 0, 1)
    blend = dict(choose_blend(np.stack([member, noise]), labels, [0.5, 0.5], ["member", "noise"]).candidates)
    assert blend["mean of scores"] == round(cross_fitted_f1(labels, (member + noise) / 2), 6)
    assert blend["member alone"] == round(score(labels, (member >= 0.5).astype(int)).macro_f1, 6)
