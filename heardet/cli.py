"""The ``heardet`` command line: ``heardet --help`` lists the commands."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from heardet.data import DataError

logger = logging.getLogger("heardet")


def configure_logging(verbose: int = 0, quiet: bool = False) -> None:
    """Send heardet's log records to stderr; libraries never configure logging themselves."""
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("heardet").setLevel(level)


def fail(message: str) -> None:
    """Print ``message`` as an error and exit with status 2 (bad input)."""
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
def main(verbose: int, quiet: bool) -> None:
    """heardet: detect a spoken phrase (default «не слышу») in audio recordings."""
    configure_logging(verbose, quiet)


@main.command()
@click.argument("data_dir", type=click.Path(path_type=Path))
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def validate(data_dir: Path, no_progress: bool) -> None:
    """Check DATA_DIR (wav_train/, wav_test/, word_bounds.json) and print a report.

    Exits 1 when problems were found (unreadable files, orphan bounds, duplicates).
    """
    from heardet.data import validate_dataset

    try:
        report = validate_dataset(data_dir, progress=not no_progress)
    except DataError as exc:
        fail(str(exc))
    click.echo(report.render())
    sys.exit(0 if report.ok else 1)


@main.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("data"), show_default=True,
              help="Output directory (competition layout).")
@click.option("--n-train", type=click.IntRange(min=0), default=300, show_default=True, help="Training clips.")
@click.option("--n-test", type=click.IntRange(min=0), default=200, show_default=True, help="Test clips.")
@click.option("--phrase", default="не слышу", show_default=True, help="Target phrase.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (same seed, same data).")
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True, help="Parallel processes.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def synth(out: Path, n_train: int, n_test: int, phrase: str, seed: int, workers: int, no_progress: bool) -> None:
    """Generate a Russian TTS dataset (espeak-ng + festival) in the competition layout.

    Clips already generated in OUT are kept, so an interrupted run can be resumed.
    """
    from heardet.data import validate_dataset
    from heardet.synth import SynthConfig, synthesize

    try:
        config = SynthConfig(phrase=phrase, n_train=n_train, n_test=n_test, seed=seed, workers=workers)
        result = synthesize(out, config, progress=not no_progress)
    except (ValueError, RuntimeError) as exc:
        fail(str(exc))
    click.echo(
        f"generated {result.n_generated} clips, kept {result.n_skipped} existing, in {result.seconds:.1f} s"
    )
    click.echo(validate_dataset(out, progress=not no_progress).render())


if __name__ == "__main__":
    main()
