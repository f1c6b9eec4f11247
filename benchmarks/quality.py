"""Every approach on one dataset, side by side, in one run: the table of ``benchmarks/quality.md``.

Rows: approach 1 (the rule on whisper-base transcripts), approach 2 (CatBoost on them, voice-grouped
folds), approach 3 in several recipes (``RECIPES``: the original competition recipe, whole encoder,
mean pooling, last layer, 1 epoch; the frozen encoder with the conv frame head on the last layer
and on a learned mix of every layer, stage a; stage a with feature dropout, with the GRU frame head,
and the full profile's recipe, ``full``, with one head and with two (``full2h``); ``afd`` and ``full`` with each clip's mean state subtracted
(``center``), ``afdc`` and ``fullc``; ``full`` with its head's weights averaged over its last 5 epochs, ``fulla5``, and that with three heads that must
all call a clip (``head_vote=min``), ``fulla5m3``, and ``fulla5`` with clips trading feature statistics in training
(``style_mix``), ``fulla5s``, and with near misses weighted twice in the loss (``hard_negative_weight``), ``fulla5h2``, and followed by stage b on
the top layer, ``fulla5b1``, or on the top five, ``fulla5b5``, and that with two more heads trained on the states of
the encoder stage b left, all three calling a clip (``head_vote=min``), ``fulla5b5m3``, or with near misses weighted
twice in both stages, ``fulla5b5h2``, and three whole ``fulla5b5`` fits, each with top layers of its own,
``fulla5b5f3``, and those three with the first one's stage (a) head, ``fulla5b5f3s``, and those averaged into one
fit with two more heads on it, all three calling a clip (``head_vote=min``), ``fulla5b5f3am3``, and that with stage
b's steps in bf16 autocast on a CPU with AMX (``cpu_bf16``), ``fulla5b5f3am3bf``; ``a`` and ``full`` with each
training positive's frames away from its phrase also trained as
"no phrase" (``outside_weight``), ``ao`` and ``fullo``; stage a followed
by stage b on the encoder's top layer or top two layers), and approach 4 (the ensemble the ``ensemble`` entry point would choose from the
members' out-of-fold scores, with ``full`` as the fine-tune member, applied to their test scores).
``--only`` picks fine-tune rows.

Columns: CV macro F1 (folds grouped by voice where the manifest names voices), macro F1 on the
test split (its voices and carrier sentences are not in training), leave-one-engine-out macro
F1 both ways (trained on the other engine's train clips, scored on this engine's), the share of
the test split's near-miss negatives flagged, the median localisation error on the test
positives found (frame models; the worse end against the nearest bound), training minutes (CV + final fit;
leave-one-engine-out not counted) and, for the fine-tune rows, the test macro F1 had the model
used the threshold its out-of-fold scores pick (``FinetuneConfig.threshold=-1``) instead of 0.5.
``--seed`` reruns the fine-tune rows with another seed (folds, head weights, batch order); ``--seeds 42,1,2`` runs
each of them once per seed and adds each one's mean and range over the seeds.
``--train-clips 480`` trains on the first 480 train clips only: on a 2000-clip dataset of the
default synth settings those are the quick profile's train split, scored on 1000 test clips
instead of its 120. ``--no-cv`` fits the fine-tune rows once each (no CV column).
A row with several heads (or fits) is followed by rows of the same model scored other ways: with its first head
(fit) alone (that head trains exactly as the one-head recipe's with the same seed), with its first two (of three or
more), with the other ``head_vote`` and, for fits that share one stage (a) head, with their weights averaged into
one fit (``fit_merge=average``).

    python benchmarks/quality.py DATA --out benchmarks/results/quality.json

Transcripts come from the transcript cache (filled on first use: whisper-base at about 3.5× real
time on 2 cores), encoder features from the feature cache.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import logging
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from heardet.approaches import catboost
from heardet.approaches.ensemble import choose_blend, vote, weighted
from heardet.approaches.finetune.model import HEAD_VOTES, EncoderClassifier, predict_audio
from heardet.approaches.finetune.train import (
    FinetuneConfig,
    cross_validate,
    engine_holdout,
    fit,
    prepare_examples,
)
from heardet.approaches.rule import rule_label
from heardet.cv import best_threshold
from heardet.data import groups_of, load_dataset
from heardet.metrics import score
from heardet.mlops.tracking import localisation_errors
from heardet.whisper.asr import default_cache, make_transcriber, transcribe_clips

RECIPES = {  # --only key: (row name, recipe)
    "recipe": ("3 original recipe (whole encoder, mean pooling, last layer, 1 epoch, 5 folds)", FinetuneConfig(
        n_folds=5, epochs=1, batch_size=4, encoder_lr=1e-5, head_lr=3e-4, dropout=0.2, pooling="mean",
        layers="last", max_seconds=8.0)),
    "last": ("3 frozen encoder, frame head, last layer (30 epochs, 2 folds)", FinetuneConfig(
        n_folds=2, epochs=30, batch_size=16, encoder_lr=0.0, head_lr=1e-3, pooling="frames", layers="last",
        max_seconds=8.0)),
    "a": ("3 frozen encoder, frame head, all layers mixed (stage a: 30 epochs, 2 folds)",
          FinetuneConfig(n_folds=2, epochs=30, batch_size=16, encoder_lr=0.0, head_lr=1e-3, pooling="frames",
                         layers="all", max_seconds=8.0)),
    "afd": ("3 stage a with feature dropout 0.3 (each clip's mixed-feature channels, training only)",
            FinetuneConfig(n_folds=2, epochs=30, batch_size=16, encoder_lr=0.0, head_lr=1e-3, pooling="frames",
                           layers="all", max_seconds=8.0, feature_dropout=0.3)),
    "afg": ("3 stage a with feature dropout 0.3 and the GRU frame head (whole-clip context)",
            FinetuneConfig(n_folds=2, epochs=30, batch_size=16, encoder_lr=0.0, head_lr=1e-3, pooling="frames",
                           layers="all", max_seconds=8.0, feature_dropout=0.3, frame_head="gru")),
    "b2": ("3 stage a, then the top 2 layers trained on cached states (stage b: 3 epochs at 3e-5)",
           FinetuneConfig(n_folds=2, epochs=30, batch_size=16, encoder_lr=3e-5, head_lr=1e-3, pooling="frames",
                          layers="all", max_seconds=8.0, top_layers=2, top_epochs=3)),
    "b1": ("3 stage a, then the top layer trained on cached states (stage b: 3 epochs at 3e-5)",
           FinetuneConfig(n_folds=2, epochs=30, batch_size=16, encoder_lr=3e-5, head_lr=1e-3, pooling="frames",
                          layers="all", max_seconds=8.0, top_layers=1, top_epochs=3)),
}
RECIPES["full"] = ("3 the full profile's recipe: the afg row with 20 epochs",
                   dataclasses.replace(RECIPES["afg"][1], epochs=20))
RECIPES["afdc"] = ("3 the afd row, each clip's mean encoder state subtracted from its frames (center)",
                   dataclasses.replace(RECIPES["afd"][1], center=True))
RECIPES["fullc"] = ("3 the full row, each clip's mean encoder state subtracted from its frames (center)",
                    dataclasses.replace(RECIPES["full"][1], center=True))
RECIPES["ao"] = ("3 the a row, positives' frames away from the phrase also trained as negatives (outside weight 1)",
                 dataclasses.replace(RECIPES["a"][1], outside_weight=1.0))
RECIPES["fullo"] = ("3 the full row, positives' frames away from the phrase also trained as negatives "
                    "(outside weight 1)",
                    dataclasses.replace(RECIPES["full"][1], outside_weight=1.0))
RECIPES["full3h"] = ("3 the full row with three heads (seeds 42, 43, 44) on the same cached states, "
                     "scoring with the mean of their probabilities",
                     dataclasses.replace(RECIPES["full"][1], heads=3))
RECIPES["full2h"] = ("3 the full row with two heads (seeds 42, 43) on the same cached states, scoring with the mean of "
                     "their probabilities",
                     dataclasses.replace(RECIPES["full"][1], heads=2))
RECIPES["fullo3h"] = ("3 the fullo row with three heads (the quick profile's recipe, its heads' mean)",
                      dataclasses.replace(RECIPES["fullo"][1], heads=3))
RECIPES["fulla5"] = ("3 the full row, its head ending on the mean of its weights at the last 5 epochs' ends "
                     "(average_epochs=5)", dataclasses.replace(RECIPES["full"][1], average_epochs=5))
RECIPES["fulla5m3"] = ("3 the fulla5 row with three heads (seeds N, N+1, N+2), a clip called only when every head "
                        "calls it (head_vote=min)",
                        dataclasses.replace(RECIPES["fulla5"][1], heads=3, head_vote="min"))
RECIPES["fulla5s"] = ("3 the fulla5 row, a training batch's clips trading feature statistics half the time (style_mix=0.5)",
                      dataclasses.replace(RECIPES["fulla5"][1], style_mix=0.5))
RECIPES["fulla5h2"] = ("3 the fulla5 row, near-miss negatives weighted twice in the training loss "
                       "(hard_negative_weight=2)", dataclasses.replace(RECIPES["fulla5"][1], hard_negative_weight=2.0))
RECIPES["fulla5b1"] = ("3 the fulla5 row, then the encoder's top layer trained on cached states with its head "
                       "(stage b: 3 epochs at 3e-5)", dataclasses.replace(RECIPES["fulla5"][1], encoder_lr=3e-5,
                                                                           top_layers=1, top_epochs=3))
RECIPES["fulla5b5"] = ("3 the fulla5 row, then the encoder's top 5 layers (of whisper-base's 6) trained on cached states "
                       "with its head (stage b: 2 epochs at 2e-5)",
                       dataclasses.replace(RECIPES["fulla5"][1], encoder_lr=2e-5, top_layers=5, top_epochs=2))
RECIPES["fulla5b5m3"] = ("3 the fulla5b5 row with three heads: its head through both stages, then two more (seeds N+1, "
                         "N+2) on the states of the encoder stage b trained; a clip called only when every head calls "
                         "it (head_vote=min)",
                         dataclasses.replace(RECIPES["fulla5b5"][1], heads=3, head_vote="min"))
RECIPES["fulla5b5h2"] = ("3 the fulla5b5 row, near-miss negatives weighted twice in the training loss of both stages "
                         "(hard_negative_weight=2)",
                         dataclasses.replace(RECIPES["fulla5b5"][1], hard_negative_weight=2.0))
RECIPES["fulla5b5f3"] = ("3 three fits of the fulla5b5 row (seeds N, N+1, N+2), each through both stages with top "
                         "layers of its own, scoring with their mean probability (fits=3)",
                         dataclasses.replace(RECIPES["fulla5b5"][1], fits=3))
RECIPES["fulla5b5f3s"] = ("3 the fulla5b5f3 row with one stage (a) head: the three fits' stage (b) runs (seeds N, N+1, "
                          "N+2) all start from a copy of the first fit's (fit_stage_a=shared)",
                          dataclasses.replace(RECIPES["fulla5b5"][1], fits=3, fit_stage_a="shared"))
RECIPES["fulla5b5f3am3"] = ("3 the fulla5b5f3s row, its three fits' weights averaged into one (fit_merge=average), "
                            "then two more heads (seeds N+1, N+2) on the averaged encoder's states, a clip called "
                            "only when every head calls it (head_vote=min)",
                            dataclasses.replace(RECIPES["fulla5b5f3s"][1], fit_merge="average", heads=3,
                                                head_vote="min"))
RECIPES["fulla5b5f3am3bf"] = ("3 the fulla5b5f3am3 row, stage (b)'s training steps in bf16 autocast on a CPU with AMX "
                              "(cpu_bf16)", dataclasses.replace(RECIPES["fulla5b5f3am3"][1], cpu_bf16=True))
ENSEMBLE_MEMBER = "full"  # the fine-tune the full profile's main job registers, beside the rule and CatBoost


@contextlib.contextmanager
def scored_as(model: EncoderClassifier, head_vote: str | None, kept: int):
    """Inside the block, ``model`` scores with ``head_vote`` and its first ``kept`` heads and fits only; with
    ``head_vote=None``, a copy of ``model`` with its fits' weights averaged into one (``model`` stays as it is)."""
    if head_vote is None:
        merged = copy.deepcopy(model)
        merged.average_fits()
        yield merged
        return
    saved = model.head_vote, model.extra_heads, model.extra_fits
    model.head_vote = head_vote
    model.extra_heads = torch.nn.ModuleList(list(saved[1])[: kept - 1])
    model.extra_fits = torch.nn.ModuleList(list(saved[2])[: kept - 1])
    try:
        yield model
    finally:
        model.head_vote, model.extra_heads, model.extra_fits = saved


def near_miss_rate(clips, predicted: np.ndarray) -> float | None:
    """Share of the near-miss negatives (manifest ``kind`` = ``hard_negative``) predicted positive."""
    rows = [i for i, c in enumerate(clips) if c.meta.get("kind") == "hard_negative"]
    return float(np.mean(predicted[rows])) if rows else None


def localisation_error(dataset, clips, results) -> float | None:
    """Median over the test positives found of the worse end's error against the nearest bound, seconds
    (what the finetune entry point logs as ``test_localisation_median_error_s``)."""
    predictions = pd.DataFrame({"id": [c.id for c in clips], "label": [r.label for r in results],
                                "phrase_start_s": [np.nan if r.phrase_start_s is None else r.phrase_start_s
                                                   for r in results],
                                "phrase_end_s": [np.nan if r.phrase_end_s is None else r.phrase_end_s
                                                 for r in results]})
    errors = localisation_errors(predictions, dataset)
    return float(np.median(errors)) if len(errors) else None


SUMMARISED = ("cv_f1", "test_f1", "near_miss_fp", "localisation_s", "train_minutes")


def seed_summary(name: str, rows: list[dict]) -> dict:
    """One recipe's rows over several seeds as one row: each figure's mean (``None`` where a row lacks it), and
    ``<figure>_range`` its lowest and highest."""
    summary = {"approach": f"{name} [mean of seeds {', '.join(str(r['seed']) for r in rows)}]",
               "recipe": rows[0]["recipe"], "seeds": [r["seed"] for r in rows]}
    figures = list(SUMMARISED) + sorted({k for r in rows for k in r if k.startswith("loeo_")})
    for figure in figures:
        values = [r.get(figure) for r in rows]
        if any(v is None for v in values):
            summary[figure] = None
            continue
        summary[figure] = float(np.mean(values))
        summary[f"{figure}_range"] = [float(min(values)), float(max(values))]
    return summary


def transcript_rows(dataset, test_clips, add, members, progress: bool = True) -> tuple[list[str], dict, np.ndarray]:
    """Approaches 1 and 2 on shared whisper-base transcripts: their rows (``add``) and members; returns the train
    ids every transcript scored, the train clips by id and the test labels."""
    transcriber = make_transcriber("whisper-base")
    started = time.perf_counter()
    train_t = transcribe_clips(transcriber, dataset.train, cache=default_cache(), progress=progress)
    test_t = transcribe_clips(transcriber, test_clips, cache=default_cache(), progress=progress)
    transcribe_s = time.perf_counter() - started
    ok = (train_t.error == "").to_numpy()
    ids = list(train_t.id[ok])
    texts, labels = list(train_t.text[ok]), train_t.label[ok].astype(int).to_numpy()
    test_labels = np.array([c.label for c in test_clips])
    rule_train = np.array([rule_label(t) for t in texts], dtype=float)
    rule_test = np.array([rule_label(t) for t in test_t.text], dtype=float)
    add({"approach": "1 rule ('не слыш' in the transcript)", "cv_f1": None,
         "test_f1": score(test_labels, rule_test.astype(int)).macro_f1,
         "near_miss_fp": near_miss_rate(test_clips, rule_test), "train_minutes": 0.0,
         "note": f"transcribing train + test took {transcribe_s / 60:.1f} min"})
    members["rule"] = ("rule", dict(zip(ids, rule_train)), 0.5, rule_test)

    by_id = {c.id: c for c in dataset.train}
    kept = [by_id[i] for i in ids]
    config = catboost.CatBoostConfig(n_folds=5)
    started = time.perf_counter()
    cv = catboost.cross_validate(texts, labels, config, progress=False, groups=groups_of(kept, "voice"))
    iterations = int(np.median(cv.extra["best_iteration"]))
    model = catboost.fit_final(texts, labels, config, iterations)
    minutes = (time.perf_counter() - started) / 60
    test_scores = catboost.predict_proba(model, list(test_t.text))
    loeo = catboost.engine_holdout(texts, labels, groups_of(kept, "engine"), config, iterations, cv.threshold)
    add({"approach": "2 CatBoost on the transcripts (5 folds)", "cv_f1": cv.mean_f1,
         "test_f1": score(test_labels, (test_scores >= cv.threshold).astype(int)).macro_f1,
         **{f"loeo_{k}": v.macro_f1 for k, v in loeo.items()},
         "near_miss_fp": near_miss_rate(test_clips, test_scores >= cv.threshold), "train_minutes": minutes})
    members["catboost"] = ("catboost", dict(zip(ids, cv.oof_score)), cv.threshold, test_scores)
    return ids, by_id, test_labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path)
    parser.add_argument("--skip-recipe", action="store_true", help="leave out the original recipe (the slow row)")
    parser.add_argument("--recipe-folds", type=int, default=5,
                        help="folds of the original recipe's row (5 is the recipe; fewer is cheaper)")
    parser.add_argument("--skip-last-layer", action="store_true", help="leave out the last-layer frame head's row")
    parser.add_argument("--approach-3-only", action="store_true",
                        help="only the fine-tune's rows: no transcripts (approaches 1, 2 and 4 need them)")
    parser.add_argument("--only", default=",".join(RECIPES),
                        help=f"the fine-tune rows to run, a comma list of {', '.join(RECIPES)} (default: all)")
    parser.add_argument("--skip-loeo", action="store_true", help="no leave-one-engine-out refits")
    parser.add_argument("--seed", type=int, default=42,
                        help="the fine-tune recipes' seed (folds, initial head weights, batch order)")
    parser.add_argument("--seeds", default="",
                        help="a comma list of seeds: each fine-tune row once per seed (instead of --seed), its name "
                             "ending in [seed N], and after them each row's mean and range over the seeds; the "
                             "ensemble takes the first seed's fine-tune")
    parser.add_argument("--train-clips", type=int, default=0,
                        help="train on the first N train clips by id only (0 = all): a dataset synthesised with the "
                             "same settings and seed but fewer clips has exactly these, so a 2000-clip dataset's "
                             "first 480 are the quick profile's train split, scored here on the larger test split")
    parser.add_argument("--no-cv", action="store_true",
                        help="fine-tune rows: one fit on the train clips, no cross-validation (no CV column; "
                             "threshold 0.5, as the profiles use); about halves their minutes")
    parser.add_argument("--epochs", type=int, default=0,
                        help="train every fine-tune row for N epochs (stage (a)) instead of its recipe's (0 = the recipe's)")
    parser.add_argument("--out", type=Path, help="write the rows as JSON here")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bars (on stderr) while clips load and transcribe and a fine-tune row trains")
    parser.add_argument("--scores", type=Path,
                        help="write every fine-tune row's test score per clip here (CSV: id, label, one column per "
                             "row, and for a row of several heads one per other way its fit is scored, e.g. "
                             "fulla5m3:first:42); benchmarks/errors.py breaks its errors down by engine, voice and "
                             "kind of clip")
    args = parser.parse_args()
    only = [key.strip() for key in args.only.split(",") if key.strip()]
    if set(only) - set(RECIPES):
        parser.error(f"--only: unknown rows {sorted(set(only) - set(RECIPES))}; known: {', '.join(RECIPES)}")
    if not args.approach_3_only and ENSEMBLE_MEMBER not in only:
        parser.error(f"--only must include {ENSEMBLE_MEMBER!r} (the ensemble's fine-tune member) "
                     "unless --approach-3-only")
    if args.train_clips < 0:
        parser.error(f"--train-clips must be >= 0, got {args.train_clips}")
    if args.epochs < 0:
        parser.error(f"--epochs must be >= 0, got {args.epochs}")
    try:
        seeds = [int(v) for v in args.seeds.split(",") if v.strip()] or [args.seed]
    except ValueError:
        parser.error(f"--seeds must be a comma list of integers >= 0, got {args.seeds!r}")
    if min(seeds) < 0 or len(set(seeds)) != len(seeds):
        parser.error(f"--seeds must be distinct integers >= 0, got {args.seeds!r}")
    if args.no_cv and not args.approach_3_only:
        parser.error("--no-cv needs --approach-3-only (the ensemble is chosen on out-of-fold scores)")
    logging.basicConfig(level=logging.WARNING)
    dataset = load_dataset(args.data, require_train=True)
    if args.train_clips:
        if args.train_clips > len(dataset.train):
            parser.error(f"--train-clips {args.train_clips}: {args.data} has {len(dataset.train)} train clips")
        first = sorted(dataset.train, key=lambda c: c.id)[: args.train_clips]
        dataset = dataclasses.replace(dataset, train=tuple(first))
    test_clips = [c for c in dataset.test if c.label is not None]
    if not test_clips:
        raise SystemExit(f"{args.data}: the test split has no labels (test_labels.csv); nothing to score")
    engines_of_train = groups_of(dataset.train, "engine")
    rows, members = [], {}  # members: {key: (name, oof by train id, threshold, test scores)}
    per_clip = pd.DataFrame({"id": [c.id for c in test_clips], "label": [c.label for c in test_clips]})

    def add(row: dict) -> None:
        rows.append(row)
        print(json.dumps(row, ensure_ascii=False), flush=True)

    def keep_scores(column: str, scores: np.ndarray) -> None:
        per_clip[column] = scores
        if args.scores:  # written after every column: a long run stopped early keeps what it scored
            per_clip.to_csv(args.scores, index=False, float_format="%.5f")

    progress = not args.quiet
    if not args.approach_3_only:
        ids, by_id, test_labels = transcript_rows(dataset, test_clips, add, members, progress)
    examples = prepare_examples(dataset.train, progress=progress)
    test = prepare_examples(test_clips, progress=progress)
    runs = [(key, seed) for key in RECIPES for seed in seeds
            if key in only and not (key == "last" and args.skip_last_layer)]
    names = {}  # each row's name without its seed, for the seeds' summary
    for key, seed in runs:
        name, recipe = RECIPES[key]
        recipe = dataclasses.replace(recipe, seed=seed)
        if args.epochs:
            recipe = dataclasses.replace(recipe, epochs=args.epochs)
            name = f"{name} [{args.epochs} epochs here]"
        if recipe.pooling == "mean":
            if args.skip_recipe:
                continue
            if args.recipe_folds != recipe.n_folds:
                recipe = dataclasses.replace(recipe, n_folds=args.recipe_folds)
                name = name.replace("5 folds", f"{args.recipe_folds} folds")
        names[key] = name
        if len(seeds) > 1:
            name = f"{name} [seed {seed}]"
        if progress:
            print(f"{time.strftime('%H:%M:%S')} row {key}, seed {seed}: {names[key]}", file=sys.stderr, flush=True)
        started = time.perf_counter()
        cv = None if args.no_cv else cross_validate(examples, recipe, progress=progress)
        final = fit(examples, recipe, cv=cv, progress=progress)
        minutes = (time.perf_counter() - started) / 60
        threshold = final.threshold
        results = predict_audio(final.model, final.feature_extractor, test.audios, recipe.max_seconds,
                                recipe.eval_batch_size, threshold, phrase_offsets=final.phrase_offsets)
        test_scores = np.array([r.score for r in results])
        keep_scores(f"{key}:{seed}", test_scores)
        loeo = engine_holdout(examples, recipe, threshold) if engines_of_train and not args.skip_loeo else {}
        row = {"approach": name, "cv_f1": cv.result.mean_f1 if cv else None, "threshold": threshold,
               "test_f1": score(test.labels, (test_scores >= threshold).astype(int)).macro_f1}
        if cv is not None:
            oof_threshold = best_threshold(examples.labels, cv.result.oof_score)
            row.update(oof_threshold=oof_threshold,
                       test_f1_oof_threshold=score(test.labels, (test_scores >= oof_threshold).astype(int)).macro_f1)
            if seed == seeds[0]:
                members[key] = (name.split(" (")[0], dict(zip(examples.ids, cv.result.oof_score)), threshold,
                                test_scores)
        add({**row, **{f"loeo_{k}": v.macro_f1 for k, v in loeo.items()},
             "near_miss_fp": near_miss_rate(test_clips, test_scores >= threshold),
             "localisation_s": localisation_error(dataset, test_clips, results), "train_minutes": minutes,
             "final_fit_stage_seconds": final.stage_seconds, "recipe": key, "seed": seed})
        # The same model scored more ways: its first head (fit) alone (and two), its heads' (fits') other vote.
        kept_fits = recipe.fits if recipe.fit_merge == "vote" else 1  # averaged fits leave one
        unit, count, same = ("fit", kept_fits, "the same model") if kept_fits > 1 else \
            ("head", recipe.heads, "the same fit")
        if count > 1:
            other = next(v for v in HEAD_VOTES if v != recipe.head_vote)
            variants = [(":first", f"its first {unit} alone", recipe.head_vote, 1),
                        *([(":two", f"its first two {unit}s", recipe.head_vote, 2)] if count > 2 else []),
                        (f":{other}", f"head_vote={other}", other, count)]
            if kept_fits > 1 and recipe.fit_stage_a == "shared":
                variants.append((":average", "its fits' weights averaged into one (fit_merge=average)", None, 0))
            for suffix, label, how, kept in variants:
                with scored_as(final.model, how, kept) as scored:
                    variant = predict_audio(scored, final.feature_extractor, test.audios, recipe.max_seconds,
                                            recipe.eval_batch_size, threshold, phrase_offsets=final.phrase_offsets)
                scores = np.array([r.score for r in variant])
                keep_scores(f"{key}{suffix}:{seed}", scores)
                names[key + suffix] = f"{names[key]} [{label}, {same}]"
                add({"approach": f"{name} [{label}, {same}]", "cv_f1": None, "threshold": threshold,
                     "test_f1": score(test.labels, (scores >= threshold).astype(int)).macro_f1,
                     "near_miss_fp": near_miss_rate(test_clips, scores >= threshold),
                     "localisation_s": localisation_error(dataset, test_clips, variant), "train_minutes": None,
                     "recipe": key + suffix, "seed": seed})
    if len(seeds) > 1:
        for key, name in names.items():  # the rows that ran (--skip-recipe leaves the original recipe out)
            add(seed_summary(name, [r for r in rows if r.get("recipe") == key]))

    if args.approach_3_only:
        print_table(rows, dataset, test_clips, args)
        return
    # Approach 4: the members the main job registers (rule, CatBoost, the default fine-tune), blended on
    # the train clips every member scored out of fold.
    chosen = [members["rule"], members["catboost"], members[ENSEMBLE_MEMBER]]
    common = [i for i in ids if all(i in m[1] for m in chosen)]
    oof = np.array([[m[1][i] for i in common] for m in chosen])
    blend = choose_blend(oof, [by_id[i].label for i in common], [m[2] for m in chosen], [m[0] for m in chosen])
    test_matrix = np.array([m[3] for m in chosen])
    no_errors = [[""] * len(test_clips)] * len(chosen)
    if blend.method == "vote":
        votes = np.array([(s >= m[2]).astype(int) for s, m in zip(test_matrix, chosen)])
        predicted = np.array([p.label for p in vote(votes, test_matrix, no_errors)])
    else:
        predicted = np.array([p.label for p in weighted(test_matrix, blend.weights, blend.threshold, no_errors)])
    add({"approach": f"4 ensemble ({blend.chosen}, chosen out of fold)", "cv_f1": blend.candidates[0][1],
         "test_f1": score(test_labels, predicted).macro_f1, "near_miss_fp": near_miss_rate(test_clips, predicted),
         "train_minutes": 0.0})

    print_table(rows, dataset, test_clips, args)


def print_table(rows: list[dict], dataset, test_clips, args) -> None:
    """The markdown table of ``rows`` (and the JSON file when ``--out`` asks for it)."""
    engines = sorted({k for r in rows for k in r if k.startswith("loeo_")})
    fmt = lambda v, spec=".3f": "—" if v is None else format(v, spec)  # noqa: E731
    first = f" (the first {args.train_clips} by id)" if args.train_clips else ""
    print(f"\n{len(dataset.train)} train{first} / {len(test_clips)} test clips of {args.data}; "
          f"{platform.node()}, {time.strftime('%Y-%m-%d %H:%M')}\n")
    print("| approach | CV macro F1 | test macro F1 |"
          + "".join(f" LOEO: without {e[5:]}, F1 on it |" for e in engines)
          + " near misses flagged | median localisation error, s | training minutes"
          + " | test macro F1 at the out-of-fold threshold |")
    print("|---|---|---|" + "---|" * len(engines) + "---|---|---|---|")
    for r in rows:
        oof = (f"{r['test_f1_oof_threshold']:.3f} (at {r['oof_threshold']:.2f})" if "oof_threshold" in r else "—")

        def cell(figure: str, spec: str = ".3f") -> str:  # a seed mean also shows its range
            low_high = r.get(f"{figure}_range")
            value = fmt(r.get(figure), spec)
            return value if low_high is None else f"{value} ({fmt(low_high[0], spec)}–{fmt(low_high[1], spec)})"
        print(f"| {r['approach']} | {cell('cv_f1')} | {cell('test_f1')} |"
              + "".join(f" {cell(e)} |" for e in engines)
              + f" {cell('near_miss_fp', '.1%')} | {cell('localisation_s', '.2f')} | "
              f"{cell('train_minutes', '.1f')} | {oof} |")
    if args.out:
        args.out.write_text(json.dumps({"measured": time.strftime("%Y-%m-%d %H:%M"), "data": str(args.data),
                                        "train_clips": len(dataset.train), "cv": not args.no_cv,
                                        "epochs": args.epochs or "the recipes'",
                                        "rows": rows}, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
