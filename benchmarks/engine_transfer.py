"""Leave-one-engine-out on several datasets side by side, with one fine-tune recipe.

The question it answers: does a change to the data let a model trained on one speech engine find
the phrase in the other engine's clips? For each ``NAME=DATA`` it fits the recipe (``--row``, one of
``benchmarks/quality.py``'s rows, at its threshold 0.5) on the train clips of every engine but one
and scores that engine's train clips: macro F1, recall and precision, both ways, and the minutes.
The datasets are measured in one run, one after the other, with the same recipe and seed.

    python benchmarks/engine_transfer.py v2=DATA_A v3=DATA_B --row afd \\
        --out benchmarks/results/engine_transfer.json

Encoder features come from the feature cache (``HEARDET_CACHE``), so a dataset already encoded
costs only its training.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from pathlib import Path

from quality import RECIPES

from heardet.approaches.finetune.train import engine_holdout, prepare_examples
from heardet.data import groups_of, load_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("datasets", nargs="+", metavar="NAME=DATA", help="a name for the table and a dataset folder")
    parser.add_argument("--row", default="afd", choices=sorted(RECIPES), help="the recipe (a quality.py row)")
    parser.add_argument("--seed", type=int, default=42, help="the recipe's seed")
    parser.add_argument("--out", type=Path, help="write the rows as JSON here")
    args = parser.parse_args()
    named = []
    for item in args.datasets:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            parser.error(f"{item!r}: expected NAME=DATA, e.g. v3=data")
        if not Path(path).is_dir():
            parser.error(f"{item!r}: {path} is not a folder")
        named.append((name, Path(path)))
    recipe = dataclasses.replace(RECIPES[args.row][1], seed=args.seed)
    if recipe.pooling == "mean":
        parser.error(f"--row {args.row}: the whole-encoder recipe takes hours per refit here; pick a frame row")
    rows = []
    for name, path in named:
        train = load_dataset(path, require_train=True).train
        if len(set(groups_of(train, "engine") or ())) < 2:
            raise SystemExit(f"{path}: its manifest names fewer than two engines; nothing to hold out")
        examples = prepare_examples(train, progress=False)
        started = time.perf_counter()
        held = engine_holdout(examples, recipe, threshold=0.5)
        row = {"data": name, "path": str(path), "row": args.row, "seed": args.seed,
               "minutes": round((time.perf_counter() - started) / 60, 1)}
        for engine, scores in held.items():
            row.update({f"without_{engine}_f1": scores.macro_f1, f"without_{engine}_recall": scores.recall,
                        f"without_{engine}_precision": scores.precision, f"without_{engine}_n": scores.n})
        rows.append(row)
        print(json.dumps(row), flush=True)
    engines = sorted({k.split("_")[1] for r in rows for k in r if k.startswith("without_")})
    print(f"\n{platform.node()}, row {args.row!r}, seed {args.seed}, threshold 0.5")
    print("| data | " + " | ".join(f"without {e}: F1 / recall / precision on it" for e in engines) + " | minutes |")
    print("|---|" + "---|" * len(engines) + "---|")
    for r in rows:
        cells = [f"{r[f'without_{e}_f1']:.3f} / {r[f'without_{e}_recall']:.3f} / {r[f'without_{e}_precision']:.3f}"
                 if f"without_{e}_f1" in r else "—" for e in engines]
        print(f"| {r['data']} | " + " | ".join(cells) + f" | {r['minutes']} |")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
