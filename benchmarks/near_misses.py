"""Near misses flagged by saved predictions: the share of a dataset's near-miss test negatives
(manifest ``kind`` = ``hard_negative``, e.g. «не слышно») that each CSV labels 1.

    python benchmarks/near_misses.py DATA outputs/approach_1.csv outputs/approach_3_whisper-base.csv …

The CSVs are what the entry points write (``id,label``, e.g. a ``make demo`` run's ``outputs/``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from quality import near_miss_rate

from heardet.data import load_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path)
    parser.add_argument("predictions", type=Path, nargs="+", help="CSV files with columns id and label")
    args = parser.parse_args()
    clips = load_dataset(args.data).test
    n_near = sum(c.meta.get("kind") == "hard_negative" for c in clips)
    if not n_near:
        parser.error(f"{args.data}: no near-miss test clips (manifest kind 'hard_negative')")
    for path in args.predictions:
        labels = pd.read_csv(path, dtype={"id": str}).set_index("id")["label"]
        missing = [c.id for c in clips if c.id not in labels.index]
        if missing:
            parser.error(f"{path}: no prediction for {len(missing)} test clips, e.g. {missing[0]}")
        rate = near_miss_rate(clips, np.array([int(labels[c.id]) for c in clips]))
        print(f"{path}: {round(rate * n_near)}/{n_near} near misses flagged ({rate:.1%})")


if __name__ == "__main__":
    main()
