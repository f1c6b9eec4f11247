"""Leave-one-engine-out of fine-tune recipes, ranking apart from the threshold.

``quality.py``'s leave-one-engine-out columns are macro F1 at the model's threshold (0.5). On an engine the model
never heard, that figure mixes two things: how well the scores rank the engine's clips, and where those scores
sit against 0.5. This script fits the same leave-one-engine-out models (one head, every train clip of the other
engine) for each recipe of ``quality.RECIPES`` named in ``--only`` and prints, per held-out engine: macro F1,
precision and recall at 0.5, ROC AUC, and the macro F1 at the threshold that is best on the held-out engine's own
clips (an upper bound no deployment gets: it needs that engine's labels).

    python benchmarks/loeo_ranking.py DATA --only fulla5,fulla5s --out benchmarks/results/loeo_ranking.json

``--seeds 1,2`` fits each recipe once per seed (head weights, batch order) instead of with the recipe's own (42).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from pathlib import Path

import numpy as np
from quality import RECIPES
from sklearn.metrics import roc_auc_score

from heardet.approaches.finetune.train import holdout_predictor, prepare_examples
from heardet.cv import best_threshold, engine_splits
from heardet.data import load_dataset
from heardet.metrics import score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="a dataset folder whose manifest names each clip's engine")
    parser.add_argument("--only", default="fulla5", help=f"comma-separated recipes of quality.py: {', '.join(RECIPES)}")
    parser.add_argument("--seeds", default="", help="comma-separated seeds, each recipe fitted once per seed "
                                                     "(default: the recipe's own seed)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/loeo_ranking.json"))
    args = parser.parse_args()
    try:
        seeds = [int(v) for v in args.seeds.split(",") if v.strip()]
    except ValueError:
        parser.error(f"--seeds must be a comma list of integers, got {args.seeds!r}")
    keys = [k for k in args.only.split(",") if k]
    unknown = sorted(set(keys) - set(RECIPES))
    if unknown:
        parser.error(f"--only: unknown recipes {unknown}; known: {', '.join(RECIPES)}")
    dataset = load_dataset(args.data, require_train=True)
    examples = prepare_examples(dataset.train, progress=False)
    splits = engine_splits(examples.engines)
    if not splits:
        parser.error(f"{args.data}: its train clips name fewer than two engines")
    labels = np.asarray(examples.labels)
    rows = []
    for key, seed in ((k, s) for k in keys for s in seeds or [RECIPES[k][1].seed]):
        config = dataclasses.replace(RECIPES[key][1], seed=seed)
        fit_predict = holdout_predictor(examples, config)  # the fits quality.py's LOEO columns score
        for engine, train_rows, held_out in splits:
            start = time.perf_counter()
            probs = np.asarray(fit_predict(train_rows, held_out), dtype=float)
            truth = labels[held_out]
            at_half = score(truth, (probs >= 0.5).astype(int))
            best = best_threshold(truth, probs)
            rows.append({"recipe": key, "seed": seed, "held_out": engine, "clips": len(held_out),
                         "macro_f1": at_half.macro_f1, "precision": at_half.precision, "recall": at_half.recall,
                         "roc_auc": float(roc_auc_score(truth, probs)), "best_threshold": best,
                         "macro_f1_best_threshold": score(truth, (probs >= best).astype(int)).macro_f1,
                         "seconds": time.perf_counter() - start})
            print(json.dumps(rows[-1]), flush=True)
    stamp = time.strftime("%Y-%m-%d %H:%M")
    print(f"\n{len(labels)} train clips of {args.data}, one head per fit; {platform.node()}, {stamp}")
    print("| recipe | seed | trained without | F1 at 0.5 | precision | recall | ROC AUC | F1 at its best threshold "
          "(threshold) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['recipe']} | {r['seed']} | {r['held_out']} | {r['macro_f1']:.3f} | {r['precision']:.3f} | {r['recall']:.3f} | "
              f"{r['roc_auc']:.3f} | {r['macro_f1_best_threshold']:.3f} ({r['best_threshold']:.3g}) |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"data": str(args.data), "when": stamp, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
