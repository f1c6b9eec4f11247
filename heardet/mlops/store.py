"""Which MLflow tracking store a command reads, and clear errors when a model is not in it.

A ``models:/NAME/…`` or ``runs:/…`` URI means nothing without a store. The store is, in
order: the one named explicitly (``heardet --tracking-uri``), ``MLFLOW_TRACKING_URI``, or the
project's ``mlflow.db`` found in the current folder or one of its parents. A lookup never
creates a store: MLflow would otherwise leave an empty ``mlflow.db`` wherever it was asked.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

logger = logging.getLogger(__name__)

STORE_FILE = "mlflow.db"
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
REGISTRY_URI_ENV = "MLFLOW_REGISTRY_URI"
PROGRESS_BAR_ENV = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
HOW_TO_POINT = (f"point at the right store with `heardet --tracking-uri sqlite:////abs/path/{STORE_FILE}` "
                f"or {TRACKING_URI_ENV}")


class StoreError(ValueError):
    """No usable tracking store, or the model a URI names is not in it; the message says what to do."""


def needs_store(model_uri: str) -> bool:
    """Whether ``model_uri`` is resolved through a tracking store (``models:/``, ``runs:/``)."""
    return model_uri.startswith(("models:/", "runs:/"))


def find_store(start: str | os.PathLike | None = None) -> Path | None:
    """The nearest ``mlflow.db`` in ``start`` (default: the current folder) or one of its parents."""
    folder = Path(start or Path.cwd()).resolve()
    for candidate in (folder, *folder.parents):
        if (candidate / STORE_FILE).is_file():
            return candidate / STORE_FILE
    return None


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (relative to the current folder when the
    URI is), or None for any other kind of store."""
    if not uri.startswith("sqlite:///"):
        return None
    path = unquote(uri.removeprefix("sqlite:///").split("?", 1)[0])
    return None if path in ("", ":memory:") else Path(path)


def as_tracking_uri(value: str) -> str:
    """``value`` as a tracking URI: the path of an existing ``.db`` file becomes ``sqlite:////abs/path``."""
    if "://" not in value and value.endswith(".db"):
        return f"sqlite:///{Path(value).resolve().as_posix()}"
    return value


def resolve_tracking_uri(explicit: str | None = None, start: str | os.PathLike | None = None) -> str:
    """The tracking store to use: ``explicit``, else ``MLFLOW_TRACKING_URI``, else the
    ``mlflow.db`` in ``start`` (default: the current folder) or a parent.

    Raises:
        StoreError: none of them names a store, or a SQLite store names a file that does not exist.
    """
    if explicit:
        uri, source = as_tracking_uri(explicit), "--tracking-uri"
    elif os.environ.get(TRACKING_URI_ENV):
        uri, source = os.environ[TRACKING_URI_ENV], TRACKING_URI_ENV
    else:
        found = find_store(start)
        if found is None:
            where = Path(start or Path.cwd()).resolve()
            raise StoreError(
                f"no MLflow tracking store found: {TRACKING_URI_ENV} is not set and there is no {STORE_FILE} "
                f"in {where} or its parents; {HOW_TO_POINT}"
            )
        uri, source = f"sqlite:///{found.as_posix()}", f"found {found}"
    check_exists(uri, source)
    logger.debug("tracking store %s (%s)", uri, source)
    return uri


def check_exists(uri: str, source: str = "") -> None:
    """Refuse a SQLite store whose file does not exist (MLflow would create an empty one).

    Raises:
        StoreError: naming the missing file and where the URI came from.
    """
    path = sqlite_path(uri)
    if path is not None and not path.is_file():
        origin = f" (from {source})" if source else ""
        raise StoreError(f"tracking store {uri}{origin}: no such file {path.resolve()}; {HOW_TO_POINT}")


def use_store(explicit: str | None = None, start: str | os.PathLike | None = None) -> str:
    """Resolve the store (:func:`resolve_tracking_uri`) and make MLflow read from it; the
    registry follows unless ``MLFLOW_REGISTRY_URI`` names another one. Returns the URI."""
    import mlflow

    uri = resolve_tracking_uri(explicit, start)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(os.environ.get(REGISTRY_URI_ENV) or uri)
    return uri


def registered_model_name(model_uri: str) -> str | None:
    """``models:/NAME/3``, ``models:/NAME/latest`` or ``models:/NAME@alias`` → ``NAME``; None
    for anything else, including ``models:/m-…`` (a logged model's id, not a registered name)."""
    if not model_uri.startswith("models:/"):
        return None
    ref = model_uri.removeprefix("models:/").strip("/")
    if "/" in ref:
        return ref.split("/", 1)[0] or None
    if "@" in ref:
        return ref.rsplit("@", 1)[0] or None
    return None


def check_registered(model_uri: str) -> None:
    """For a URI read through a store (``models:/``, ``runs:/``): make sure the store exists;
    for ``models:/NAME/…`` or ``models:/NAME@alias``, that the registry holds NAME.

    Raises:
        StoreError: the store is a SQLite file that does not exist, or the registry has no
            model NAME; the message lists the registered models it does hold.
    """
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    if not needs_store(model_uri):
        return
    check_exists(mlflow.get_tracking_uri())
    name = registered_model_name(model_uri)
    if name is None:
        return
    registry = mlflow.get_registry_uri()
    check_exists(registry)
    client = MlflowClient(registry_uri=registry)
    try:
        client.get_registered_model(name)
        return
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
    names = sorted(m.name for m in client.search_registered_models(max_results=1000))
    held = f"it holds {', '.join(names)}" if names else "it holds no registered models"
    raise StoreError(f"registered model {name!r} not found in {registry}; {held}; {HOW_TO_POINT}")


@contextlib.contextmanager
def quiet_downloads() -> Iterator[None]:
    """Hide MLflow's per-file artifact download bars while the block runs.

    MLflow reads ``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR`` each time it downloads; a value the
    user set is left alone.
    """
    if PROGRESS_BAR_ENV in os.environ:  # the user chose: leave it
        yield
        return
    os.environ[PROGRESS_BAR_ENV] = "false"
    try:
        yield
    finally:
        os.environ.pop(PROGRESS_BAR_ENV, None)
