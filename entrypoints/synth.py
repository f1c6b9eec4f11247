"""MLproject entry point ``synth``: generate a Russian TTS dataset in the competition layout.

Logs the generator's parameters (``heardet.synth.SynthConfig``), the clip counts and the
generation time, and these artifacts under ``dataset/``: ``report.txt`` (the
``heardet validate`` report), ``word_bounds.json``, ``test_labels.csv`` and
``manifest.jsonl`` (what was said, by which voice, with which augmentation).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import click
import mlflow

from heardet.cli import friendly_errors
from heardet.config import click_options, from_options
from heardet.synth import SynthConfig


@click.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("data"), show_default=True)
@click_options(SynthConfig)
@friendly_errors
def main(out: Path, **options) -> None:
    """Generate the dataset into OUT and log it to the active MLflow run."""
    from heardet.cli import configure_logging
    from heardet.data import validate_dataset
    from heardet.mlops.tracking import log_params, stage_run
    from heardet.synth import synthesize

    configure_logging()
    config = from_options(SynthConfig, options)
    with stage_run("synth", f"synth {config.n_train}+{config.n_test} clips"):
        log_params({**dataclasses.asdict(config), "out": str(out.resolve())})
        result = synthesize(out, config)
        report = validate_dataset(out, progress=False)
        mlflow.log_metrics({
            "n_generated": result.n_generated,
            "n_skipped": result.n_skipped,
            "positives_train": result.positives_train,
            "positives_test": result.positives_test,
            "seconds": result.seconds,
        })
        mlflow.log_text(report.render(), "dataset/report.txt")
        for name in ("word_bounds.json", "test_labels.csv", "manifest.jsonl"):
            if (out / name).exists():
                mlflow.log_artifact(str(out / name), "dataset")
        logging.getLogger("heardet").info("dataset ready in %s\n%s", out, report.render())


if __name__ == "__main__":
    main()
