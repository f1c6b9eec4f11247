"""MLproject entry point ``evaluate``: score any heardet model URI on a labelled directory.

Logs params (model_uri, data, split), ``<split>_macro_f1`` / accuracy / precision / recall,
and artifacts ``plots/confusion_<split>.png`` and ``evaluation/predictions.csv``
(id, true_label, label, score, error).
"""

from __future__ import annotations

from pathlib import Path

import click
import mlflow

from heardet.cli import friendly_errors


@click.command()
@click.option("--model-uri", required=True)
@click.option("--data", type=click.Path(path_type=Path), default=Path("data"), show_default=True)
@click.option("--split", type=click.Choice(["auto", "train", "test"]), default="auto", show_default=True)
@friendly_errors
def main(model_uri: str, data: Path, split: str) -> None:
    """Evaluate MODEL_URI on DATA and log the result to the active MLflow run."""
    from heardet.cli import configure_logging
    from heardet.mlops.scoring import evaluate_dir, load_model
    from heardet.mlops.tracking import log_evaluation, log_params, stage_run

    configure_logging()
    with stage_run("evaluate", f"evaluate {model_uri}"):
        log_params({"model_uri": model_uri, "data": str(data), "split": split})
        result = evaluate_dir(load_model(model_uri), data, split)
        log_evaluation(result.split, result.predictions.true_label, result.predictions.label, model_uri)
        mlflow.log_text(result.predictions.drop(columns=["path"]).to_csv(index=False), "evaluation/predictions.csv")
        click.echo(result.scores.render())


if __name__ == "__main__":
    main()
