"""MLproject entry point ``main`` (also ``make demo``): the whole pipeline end to end.

Runs synth → transcribe → catboost → finetune → tune → ensemble → promote as child runs of
this run, then a real ``mlflow models serve`` smoke request. Logs ``profile`` and the
stage run ids, metrics ``<stage>_seconds``, ``<approach>_cv_f1`` / ``<approach>_test_f1``
and ``total_seconds``, and artifacts ``summary/table.txt``, ``summary/serve_answer.json``
and ``plots/approaches.png``.
"""

from __future__ import annotations

import json
import re

import click
import mlflow

from heardet.cli import friendly_errors


@click.command()
@click.option("--profile", type=click.Choice(["quick", "full", "smoke"]), default="quick", show_default=True)
@click.option("--data", default="data", show_default=True)
@click.option("--out", default="outputs", show_default=True)
@click.option("--serve", type=click.BOOL, default=True, show_default=True)
@click.option("--asr-model", default="whisper-base", show_default=True, help="Whisper of approaches 1 and 2.")
@click.option("--finetune-model", default="whisper-base", show_default=True, help="Whisper of approach 3.")
@friendly_errors
def main(profile: str, data: str, out: str, serve: bool, asr_model: str, finetune_model: str) -> None:
    """Run every approach on DATA and print the results table."""
    from pipeline import render_table, run_pipeline

    from heardet.cli import configure_logging
    from heardet.mlops import plots
    from heardet.mlops.tracking import stage_run

    configure_logging()
    with stage_run("pipeline", f"main {profile}"):
        results = run_pipeline(profile, data, out, serve, asr_model, finetune_model)
        for r in results:
            key = re.sub(r"[^a-z0-9]+", "_", r.stage.split(": ")[-1].lower()).strip("_")
            mlflow.log_metric(f"{key}_seconds", r.seconds)
            for name, value in (("cv_f1", r.cv_f1), ("test_f1", r.test_f1)):
                if value is not None:
                    mlflow.log_metric(f"{key}_{name}", value)
            if r.run_id:
                mlflow.set_tag(f"stage_{key}_run_id", r.run_id)
            if "answer" in r.notes:
                mlflow.log_text(json.dumps(r.notes, indent=2, ensure_ascii=False), "summary/serve_answer.json")
        mlflow.log_metric("total_seconds", sum(r.seconds for r in results))
        table = render_table(results)
        mlflow.log_text(table, "summary/table.txt")
        rows = [r for r in results if r.stage.startswith("approach")]
        mlflow.log_figure(plots.approaches([r.stage.split(": ")[-1] for r in rows], [r.cv_f1 for r in rows],
                                           [r.test_f1 for r in rows]), "plots/approaches.png")
        click.echo("\n" + table)
        click.echo("\nBrowse the runs:  .venv/bin/mlflow ui --backend-store-uri sqlite:///mlflow.db  "
                   "then open http://127.0.0.1:5000")


if __name__ == "__main__":
    main()
