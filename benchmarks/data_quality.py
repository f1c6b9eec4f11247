"""What a dataset's CV, test and leave-one-engine-out F1 say, side by side for several datasets.

For each DATA directory (``name=path``) it runs approach 2 (CatBoost on whisper-base transcripts)
and approach 3 (the fine-tuned whisper-base encoder) with the demo's quick-profile settings, and
reports: CV macro F1 with stratified folds and with voice-grouped folds (where the manifest names
voices), test macro F1 of the model trained on every train clip, and leave-one-engine-out macro
F1 (trained without one engine, scored on its train clips). Transcripts come from the transcript
cache (filled on first use).

    python benchmarks/data_quality.py today=/path/to/old_data new=/path/to/new_data --stratified today \\
        --out benchmarks/results/data_quality.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path

import numpy as np

from heardet.approaches.catboost import CatBoostConfig, cross_validate, engine_holdout, fit_final, predict_proba
from heardet.approaches.finetune.train import FinetuneConfig, evaluate, fit, prepare_examples
from heardet.approaches.finetune.train import cross_validate as finetune_cv
from heardet.approaches.finetune.train import engine_holdout as finetune_engine_holdout
from heardet.data import groups_of, load_dataset
from heardet.metrics import score
from heardet.whisper.asr import default_cache, make_transcriber, transcribe_clips

QUICK = FinetuneConfig(model="whisper-base", n_folds=2, epochs=3, head_lr=1e-3, max_seconds=8.0)


def catboost_rows(name: str, data: Path, transcriber, folds: int) -> list[dict]:
    dataset = load_dataset(data, require_train=True)
    table = transcribe_clips(transcriber, dataset.train, cache=default_cache(), progress=True)
    test = transcribe_clips(transcriber, dataset.test, cache=default_cache(), progress=True)
    ok = table.error == ""
    texts, labels = list(table.text[ok]), table.label[ok].astype(int).to_numpy()
    clips = {c.id: c for c in dataset.train}
    kept = [clips[i] for i in table.id[ok]]
    config = CatBoostConfig(n_folds=folds)
    rows = []
    for kind, groups in (("stratified", None), ("voice-grouped", groups_of(kept, "voice"))):
        if kind == "voice-grouped" and groups is None:
            continue
        started = time.perf_counter()
        cv = cross_validate(texts, labels, config, progress=False, groups=groups)
        iterations = int(np.median(cv.extra["best_iteration"]))
        model = fit_final(texts, labels, config, iterations)
        test_f1 = score(test.label.astype(int), (predict_proba(model, list(test.text)) >= cv.threshold).astype(int))
        loeo = engine_holdout(texts, labels, groups_of(kept, "engine"), config, iterations, cv.threshold)
        rows.append({"data": name, "approach": "catboost", "folds": f"{folds} {kind}", "cv_f1": cv.mean_f1,
                     "cv_std": cv.std_f1, "test_f1": test_f1.macro_f1,
                     **{f"loeo_{k}": v.macro_f1 for k, v in loeo.items()},
                     "seconds": round(time.perf_counter() - started, 1)})
        print(rows[-1], flush=True)
    return rows


def finetune_row(name: str, data: Path, grouped: bool) -> dict:
    dataset = load_dataset(data, require_train=True)
    examples = prepare_examples(dataset.train, progress=False)
    if not grouped:
        examples = dataclasses.replace(examples, voices=())
    started = time.perf_counter()
    cv = finetune_cv(examples, QUICK, progress=False)
    final = fit(examples, QUICK, cv=cv, progress=False)
    test = prepare_examples(dataset.test, progress=False)
    probs, _ = evaluate(final.model, final.feature_extractor, test, QUICK)
    test_f1 = score(test.labels, (probs >= cv.result.threshold).astype(int))
    loeo = finetune_engine_holdout(examples, QUICK, cv.result.threshold)
    row = {"data": name, "approach": "finetune", "folds": f"2 {'voice-grouped' if grouped else 'stratified'}",
           "cv_f1": cv.result.mean_f1, "cv_std": cv.result.std_f1, "test_f1": test_f1.macro_f1,
           **{f"loeo_{k}": v.macro_f1 for k, v in loeo.items()}, "seconds": round(time.perf_counter() - started, 1)}
    print(row, flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("datasets", nargs="+", help="name=path of a dataset in the competition layout")
    parser.add_argument("--catboost-folds", type=int, default=5)
    parser.add_argument("--stratified", action="append", default=[], metavar="NAME",
                        help="fine-tune this dataset with stratified folds even if its manifest names voices "
                             "(to reproduce how it was scored before grouped folds)")
    parser.add_argument("--out", type=Path, help="write the rows as JSON here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    transcriber = make_transcriber("whisper-base")
    rows = []
    for item in args.datasets:
        name, _, path = item.partition("=")
        data = Path(path)
        rows += catboost_rows(name, data, transcriber, args.catboost_folds)
        has_voices = groups_of(load_dataset(data).train, "voice") is not None
        rows.append(finetune_row(name, data, grouped=has_voices and name not in args.stratified))
    engines = sorted({k for r in rows for k in r if k.startswith("loeo_")})
    print("\n| data | approach | folds | CV macro F1 | test macro F1 | "
          + " | ".join(f"trained without {e[5:]}, F1 on it" for e in engines) + " | seconds |")
    print("|---|---|---|---|---|" + "---|" * len(engines) + "---|")
    for r in rows:
        loeo = " | ".join(f"{r[e]:.3f}" if e in r else "—" for e in engines)
        print(f"| {r['data']} | {r['approach']} | {r['folds']} | {r['cv_f1']:.3f} ± {r['cv_std']:.3f} | "
              f"{r['test_f1']:.3f} | {loeo} | {r['seconds']} |")
    if args.out:
        args.out.write_text(json.dumps({"measured": time.strftime("%Y-%m-%d %H:%M"), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
