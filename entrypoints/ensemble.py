"""MLproject entry point ``ensemble`` (approach 4): registered models combined as their out-of-fold scores say.

With ``method=auto`` (default) it reads each member's ``oof/oof_predictions.csv`` from the run that
logged it and keeps the best of: each member alone, the majority vote, the mean and the
F1-weighted mean of the scores (``heardet.approaches.ensemble.choose_blend``), so on those scores
it is never worse than its best member; ``vote`` forces the majority vote. Logs the tag
``ensemble_method``, ``oof_macro_f1`` of the choice, ``blend/candidates.csv``.

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
@click.option("--method", type=click.Choice(["auto", "vote"]), default="auto", show_default=True,
              help="auto: the best blend on the members' out-of-fold scores; vote: majority vote.")
@friendly_errors
def main(members: str, data: Path, out: Path, register_as: str, method: str) -> None:
    """Bundle MEMBERS into one model and log it to the active MLflow run."""
    from heardet.approaches.ensemble import Blend, EnsembleModel
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
        blend = choose_from_oof(uris) if method == "auto" else None
        ensemble = EnsembleModel(uris, blend or Blend("vote"))
        mlflow.set_tag("ensemble_method", ensemble.blend.chosen)
        if blend is not None:
            mlflow.log_metric("oof_macro_f1", blend.candidates[0][1])
            mlflow.log_text("candidate,oof_macro_f1\n" + "".join(f"{n},{f}\n" for n, f in blend.candidates),
                            "blend/candidates.csv")
            log.info("ensemble: %s (out-of-fold macro F1 %.4f; candidates: %s)", blend.chosen,
                     blend.candidates[0][1], ", ".join(f"{n} {f:.3f}" for n, f in blend.candidates))
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


def choose_from_oof(uris: list[str]):
    """:func:`choose_blend` on the members' logged out-of-fold scores; None (majority vote) when a member has none."""
    import numpy as np
    import pandas as pd

    from heardet.approaches.ensemble import choose_blend
    from heardet.mlops.registry import source_run_id

    log = logging.getLogger("heardet")
    frames, thresholds = [], []
    for uri in uris:
        run_id = source_run_id(uri)
        try:
            path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="oof/oof_predictions.csv")
        except Exception:  # noqa: BLE001 - any member without scores: fall back to the vote
            log.warning("ensemble: %s has no oof/oof_predictions.csv in run %s; using the majority vote", uri, run_id)
            return None
        frames.append(pd.read_csv(path, dtype={"id": str}).set_index("id"))
        thresholds.append(mlflow.MlflowClient().get_run(run_id).data.metrics.get("cv_threshold", 0.5))
    common = sorted(set.intersection(*(set(f.index) for f in frames)))
    if len(common) < 10:
        log.warning("ensemble: members share only %d out-of-fold rows; using the majority vote", len(common))
        return None
    oof = np.stack([f.loc[common, "oof_score"].astype(float).to_numpy() for f in frames])
    labels = frames[0].loc[common, "label"].astype(int).to_numpy()
    return choose_blend(oof, labels, thresholds, [u.removeprefix("models:/") for u in uris])


if __name__ == "__main__":
    main()
