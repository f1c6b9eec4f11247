"""MLproject entry point ``promote``: point ``models:/<name>@production`` at a version.

With ``data`` (a labelled directory) the candidate and the current Production version are
scored first and a worse candidate is refused (exit 1) unless ``force`` is true.
Logs params (name, version, data, force), metrics ``candidate_macro_f1`` /
``previous_macro_f1`` and the artifact ``promotion.txt``. When the run that created the
version scored its members (an ensemble's ``member_<i>_test_macro_f1``) and one of them beat
the version itself, the promotion goes ahead with a warning naming that member (logged, and
in the printed report and ``promotion.txt``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
import mlflow

from heardet.cli import friendly_errors


@click.command()
@click.option("--name", required=True)
@click.option("--version", required=True)
@click.option("--data", default="", help="Labelled directory for the quality gate (empty: no gate).")
@click.option("--force", type=click.BOOL, default=False, show_default=True)
@friendly_errors
def main(name: str, version: str, data: str, force: bool) -> None:
    """Promote NAME/VERSION to Production and log the comparison to the active MLflow run."""
    from heardet.cli import configure_logging
    from heardet.mlops.registry import PromotionRefused, promote
    from heardet.mlops.tracking import log_params, stage_run

    configure_logging()
    with stage_run("promote", f"promote {name}/{version}"):
        log_params({"name": name, "version": version, "data": data, "force": force})
        try:
            result = promote(name, version, Path(data) if data else None, force=force)
        except PromotionRefused as exc:
            mlflow.log_text(str(exc), "promotion.txt")
            mlflow.set_tag("promoted", "false")
            click.echo(str(exc), err=True)
            sys.exit(1)
        for key, value in (("candidate_macro_f1", result.candidate_f1), ("previous_macro_f1", result.previous_f1)):
            if value is not None:
                mlflow.log_metric(key, value)
        mlflow.set_tag("promoted", "true")
        mlflow.log_text(result.render(), "promotion.txt")
        click.echo(result.render())


if __name__ == "__main__":
    main()
