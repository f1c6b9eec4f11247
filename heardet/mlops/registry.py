"""Model registry: promotion to Production with an optional quality gate."""

from __future__ import annotations

import logging
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

PRODUCTION_ALIAS = "production"


class PromotionRefused(RuntimeError):
    """The candidate scored worse than the current Production version."""


@dataclass(frozen=True)
class Promotion:
    """What :func:`promote` did; F1 values are None when no gate data was given."""

    name: str
    version: str
    previous: str | None
    candidate_f1: float | None = None
    previous_f1: float | None = None
    promoted: bool = True
    warnings: tuple[str, ...] = ()

    def render(self) -> str:
        lines = [f"{self.name} version {self.version}: {'promoted to Production' if self.promoted else 'REFUSED'}"]
        if self.candidate_f1 is not None:
            lines.append(f"  candidate macro F1 {self.candidate_f1:.4f}")
        if self.previous is not None:
            shown = f"{self.previous_f1:.4f}" if self.previous_f1 is not None else "not scored"
            lines.append(f"  previous Production version {self.previous}: macro F1 {shown}")
        lines.extend(f"  WARNING: {warning}" for warning in self.warnings)
        return "\n".join(lines)


MEMBER_METRIC = re.compile(r"^member_(\d+)_test_macro_f1$")


def members_ahead(run) -> list[str]:
    """Warnings for the members an ensemble's run scored above the ensemble itself.

    Reads ``test_macro_f1`` and ``member_<i>_test_macro_f1`` (logged by the ``ensemble``
    entry point on the same test split); a member is named by its ``member_<i>_version``
    tag, else its ``member_<i>`` parameter. Empty when the run logged no member scores.
    """
    metrics, tags, params = run.data.metrics, run.data.tags, run.data.params
    ensemble_f1 = metrics.get("test_macro_f1")
    if ensemble_f1 is None:
        return []
    warnings = []
    for key, member_f1 in sorted(metrics.items()):
        match = MEMBER_METRIC.match(key)
        if match and member_f1 > ensemble_f1:
            i = match.group(1)
            member = tags.get(f"member_{i}_version") or params.get(f"member_{i}") or f"member {i}"
            warnings.append(f"its test macro F1 {ensemble_f1:.4f} is below that of its member {member} "
                            f"({member_f1:.4f}, run {run.info.run_id}); consider promoting that member instead")
    return warnings


def current_production(name: str) -> str | None:
    """The version the ``production`` alias points at, or None when the model has no such alias.

    Raises:
        mlflow.exceptions.MlflowException: any other registry failure (a server that does not
            answer, a locked database): the promotion gate fails closed rather than read it as
            "no Production yet".
    """
    from mlflow import MlflowClient

    client = MlflowClient()
    aliases = client.get_registered_model(name).aliases  # raises for a missing model or a failing registry
    return str(aliases[PRODUCTION_ALIAS]) if PRODUCTION_ALIAS in aliases else None


def promote(name: str, version: str | int, data: str | Path | None = None, force: bool = False,
            progress: bool = True) -> Promotion:
    """Point ``models:/<name>@production`` at ``version`` and set its stage to Production
    (archiving the previous one).

    Args:
        name: registered model name.
        version: the candidate version.
        data: a labelled directory; when given, the candidate and the current Production
            version are both scored on it and a worse candidate is refused.
        force: promote even when the gate says no.

    The returned :class:`Promotion` carries a warning (also logged) for every member an
    ensemble's own run scored above the ensemble on the test split (:func:`members_ahead`).

    Raises:
        PromotionRefused: the candidate's macro F1 is below the current Production version's.
        mlflow.exceptions.MlflowException: no such model or version.
    """
    from mlflow import MlflowClient

    from heardet.mlops.scoring import evaluate_dir, load_model

    client = MlflowClient()
    version = str(version)
    candidate = client.get_model_version(name, version)  # fails clearly when it does not exist
    previous = current_production(name)
    candidate_f1 = previous_f1 = None
    if data is not None:
        candidate_f1 = evaluate_dir(load_model(f"models:/{name}/{version}"), data, progress=progress).scores.macro_f1
        if previous is not None and previous != version:
            previous_f1 = evaluate_dir(load_model(f"models:/{name}/{previous}"), data,
                                       progress=progress).scores.macro_f1
    if previous_f1 is not None and candidate_f1 < previous_f1 and not force:
        result = Promotion(name, version, previous, candidate_f1, previous_f1, promoted=False)
        raise PromotionRefused(
            f"{result.render()}\nthe candidate is worse than Production; pass force=true to promote anyway"
        )
    client.set_registered_model_alias(name, PRODUCTION_ALIAS, version)
    with warnings.catch_warnings():  # stages are deprecated but still read by older tooling
        warnings.simplefilter("ignore", FutureWarning)
        # Archived one by one: MLflow's archive_existing_versions=True fails on a PostgreSQL
        # store (its query compares the integer version with a string).
        for other in client.search_model_versions(f"name = '{name}'"):
            if str(other.version) != version and other.current_stage == "Production":
                client.transition_model_version_stage(name, other.version, "Archived")
        client.transition_model_version_stage(name, version, "Production")
    logger.info("%s version %s is Production (previous: %s)", name, version, previous)
    cautions = tuple(members_ahead(client.get_run(candidate.run_id))) if _run_exists(candidate.run_id) else ()
    for caution in cautions:
        logger.warning("%s version %s: %s", name, version, caution)
    return Promotion(name, version, previous, candidate_f1, previous_f1, warnings=cautions)


def _run_exists(run_id: str | None) -> bool:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    if not run_id:
        return False
    try:
        MlflowClient().get_run(run_id)
        return True
    except MlflowException:
        return False


def resolve_version(uri: str) -> str:
    """``models:/name/3`` or ``models:/name@alias`` → ``name/3``; other URIs unchanged."""
    from mlflow import MlflowClient

    if not uri.startswith("models:/"):
        return uri
    ref = uri.removeprefix("models:/")
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return f"{name}/{MlflowClient().get_model_version_by_alias(name, alias).version}"
    return ref


def source_run_id(uri: str) -> str | None:
    """The run that logged the model at ``uri`` (``models:/name/3``, ``models:/name@alias`` or ``runs:/<id>/…``)."""
    from mlflow import MlflowClient

    if uri.startswith("runs:/"):
        return uri.removeprefix("runs:/").split("/", 1)[0]
    if not uri.startswith("models:/"):
        return None
    name, _, version = resolve_version(uri).partition("/")
    return MlflowClient().get_model_version(name, version).run_id


OPERATING_POINT_TAG = "heardet.scan_threshold_fah_{target:g}"  # a model version's threshold for a FA/h target


def _model_version(uri: str) -> tuple[str, str]:
    from heardet.data import DataError

    if not uri.startswith("models:/"):
        raise DataError(f"{uri}: operating points live on a registered model version; give models:/name/version "
                        "or models:/name@alias")
    name, _, version = resolve_version(uri).partition("/")
    return name, version


def store_operating_points(uri: str, points: dict[float, float | None]) -> str:
    """Record ``{target FA/h: threshold}`` as tags of the model version ``uri`` names; returns what was done."""
    from mlflow import MlflowClient

    name, version = _model_version(uri)
    client = MlflowClient()
    done = []
    for target, threshold in sorted(points.items()):
        if threshold is None:
            done.append(f"{target:g} FA/h: not reachable on these calls, nothing stored")
            continue
        client.set_model_version_tag(name, version, OPERATING_POINT_TAG.format(target=target), repr(float(threshold)))
        done.append(f"{target:g} FA/h: threshold {threshold!r}")
    return f"operating points of {name} version {version}: " + "; ".join(done)


def stored_threshold(uri: str, target: float) -> float:
    """The threshold stored on the model version ``uri`` names for ``target`` false accepts per hour.

    Raises:
        DataError: not a registered model version, or no operating point stored for that target.
    """
    from mlflow import MlflowClient

    from heardet.data import DataError

    name, version = _model_version(uri)
    tags = MlflowClient().get_model_version(name, version).tags
    value = tags.get(OPERATING_POINT_TAG.format(target=target))
    if value is None:
        stored = sorted(k.rsplit("_", 1)[-1] for k in tags if k.startswith("heardet.scan_threshold_fah_"))
        raise DataError(f"{name} version {version} has no operating point for {target:g} FA/h "
                        f"(stored: {', '.join(stored) or 'none'}); choose one on calls with "
                        f"`heardet evaluate CALLS --model {uri} --store-operating-points`")
    return float(value)
