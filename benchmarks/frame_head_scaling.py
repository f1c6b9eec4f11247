"""How the frozen-encoder frame head scales with training clips.

Trains approach 3 with a frozen whisper-base encoder (cached features), the frame head and the
demo's settings (2 voice-grouped folds, 30 epochs, batch 16, head_lr 1e-3) on the first N train
clips of DATA for each N, and scores the first TEST clips of its test split.

    python benchmarks/frame_head_scaling.py /path/to/synth_10k --sizes 240 960 --test 1000
"""

from __future__ import annotations

import argparse
import time

from heardet.approaches.finetune.train import FinetuneConfig, cross_validate, evaluate, fit, prepare_examples
from heardet.data import load_dataset
from heardet.metrics import score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data")
    parser.add_argument("--sizes", type=int, nargs="+", default=[240, 960])
    parser.add_argument("--test", type=int, default=1000)
    args = parser.parse_args()
    dataset = load_dataset(args.data)
    test = prepare_examples(dataset.test[: args.test], progress=False)
    config = FinetuneConfig(n_folds=2, epochs=30, batch_size=16, encoder_lr=0.0, head_lr=1e-3, max_seconds=10.0)
    print("| train clips | CV macro F1 | test macro F1 | seconds |\n|---|---|---|---|")
    for n in args.sizes:
        examples = prepare_examples(dataset.train[:n], progress=False)
        started = time.perf_counter()
        cv = cross_validate(examples, config, progress=False)
        fitted = fit(examples, config, cv=cv, progress=False)
        probs, _ = evaluate(fitted.model, fitted.feature_extractor, test, config)
        f1 = score(test.labels, (probs >= cv.result.threshold).astype(int)).macro_f1
        print(f"| {n} | {cv.result.mean_f1:.3f} | {f1:.3f} | {time.perf_counter() - started:.0f} |", flush=True)


if __name__ == "__main__":
    main()
