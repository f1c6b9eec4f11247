"""MLproject entry point ``ensemble`` (approach 4): majority vote of registered models.

``members`` is a comma-separated list of model URIs (``models:/heardet-catboost/2``,
``models:/heardet-rule@production``, ...). Copies of the members are bundled into the
logged model, so serving it needs no registry access.

Logs params ``member_<i>`` (URI as given) and tags ``member_<i>_version`` (the version it
resolved to), test-split metrics of the ensemble and of every member when ``wav_test`` is
labelled, and artifacts ``plots/confusion_test.png``, ``submission/approach_4_blended.csv``
(also written to ``out``) and the pyfunc model ``model``, registered as ``register_as``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import click
import mlflow

from heardet.cli import friendly_errors


@click.command()
@click.option("--members", required=True, help="Comma-separated model URIs.")
@click.option("--data", type=click.Path(path_type=Path), default=Path("data"), show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("outputs"), show_default=True)
@click.option("--register-as", default="heardet-ensemble", show_default=True)
@friendly_errors
def main(members: str, data: Path, out: Path, register_as: str) -> None:
    """Bundle MEMBERS into a majority-vote model and log it to the active MLflow run."""
    from heardet.approaches.ensemble import EnsembleModel
    from heardet.cli import configure_logging
    from heardet.data import load_dataset
    from heardet.mlops.contract import log_contract_model
    from heardet.mlops.registry import resolve_version
    from heardet.mlops.tracking import log_evaluation, log_test_split, stage_run

    configure_logging()
    log = logging.getLogger("heardet")
    uris = [u.strip() for u in members.split(",") if u.strip()]
    if len(uris) < 2:
        raise click.BadParameter(f"need at least 2 member URIs, got {uris}", param_hint="members")
    dataset = load_dataset(data) if data.exists() else None
    with stage_run("ensemble", f"ensemble of {len(uris)}"):
        start = time.perf_counter()
        ensemble = EnsembleModel(uris)
        for i, uri in enumerate(uris):
            mlflow.log_param(f"member_{i}", uri)
            mlflow.set_tag(f"member_{i}_version", resolve_version(uri))
        info = log_contract_model(ensemble, "model", artifacts=dict(zip(ensemble.keys, uris)),
                                  registered_model_name=register_as or None, extra_int_columns=ensemble.keys)
        test = log_test_split(info.model_uri, dataset, "approach_4_blended.csv", out, "approach 4 (ensemble)") \
            if dataset is not None else None
        if test is not None and test.scores is not None:
            labels = [c.label for c in dataset.test]
            for i, key in enumerate(ensemble.keys):  # each member's own vote, scored the same way
                log_evaluation(f"member_{i}_test", labels, test.predictions[key], uris[i])
        mlflow.log_metric("wall_seconds", time.perf_counter() - start)
        log.info("ensemble of %d members logged: %s", len(uris), info.model_uri)


if __name__ == "__main__":
    main()
