"""MLproject entry point ``main`` (also ``make demo``): the whole pipeline end to end.

Runs synth → transcribe → catboost → finetune → tune → ensemble → promote as child runs of
this run, then a real ``mlflow models serve`` smoke request. Logs ``profile`` and the
stage run ids, metrics ``<stage>_seconds``, ``<approach>_cv_f1`` / ``<approach>_test_f1``
and ``total_seconds``, and artifacts ``summary/table.txt``, ``summary/serve_answer.json``
and ``plots/approaches.png``.
"""

from __future__ import annotations

import click

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
    import mlflow
    from pipeline import StageFailed, log_results, run_pipeline

    from heardet.cli import configure_logging
    from heardet.mlops.tracking import stage_run

    configure_logging()
    with stage_run("pipeline", f"main {profile}"):
        try:
            results = run_pipeline(profile, data, out, serve, asr_model, finetune_model)
        except StageFailed as exc:
            raise click.ClickException(str(exc)) from None
        table = log_results(results)
        click.echo("\n" + table)
        for r in results:
            if "refused" in r.notes:
                click.echo(f"\nThe promotion gate refused the new version; Production is unchanged:\n"
                           f"{r.notes['refused']}")
        uri = mlflow.get_tracking_uri()
        browse = (f"open {uri}" if uri.startswith("http") else
                  f".venv/bin/mlflow ui --backend-store-uri {uri}  then open http://127.0.0.1:5000")
        click.echo(f"\nBrowse the runs:  {browse}")


if __name__ == "__main__":
    main()
