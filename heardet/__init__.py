"""heardet: detect whether a spoken phrase (default «не слышу») occurs in audio recordings.

Nothing heavy is imported here: ``import heardet`` stays fast, and torch, transformers and
MLflow load only when a function that needs them is called. The fine-tune
(``heardet.approaches.finetune.train``, ``heardet.approaches.finetune.model``), tuning (``heardet.approaches.finetune.tune``), ensemble and
registry modules import torch or MLflow and are imported by name.
"""

from heardet.audio import SAMPLE_RATE, AudioError, Window, iter_windows, load_audio
from heardet.data import (
    Clip,
    DataError,
    Dataset,
    ValidationReport,
    load_dataset,
    parse_bounds,
    validate_dataset,
)
from heardet.metrics import Scores, score
from heardet.synth import SynthConfig, SynthReport, synthesize
from heardet.whisper.asr import DecodeOptions, Transcript, make_transcriber

__version__ = "0.1.0"

__all__ = [
    "SAMPLE_RATE",
    "DecodeOptions",
    "Scores",
    "Transcript",
    "AudioError",
    "Clip",
    "DataError",
    "Dataset",
    "SynthConfig",
    "SynthReport",
    "ValidationReport",
    "Window",
    "iter_windows",
    "load_audio",
    "load_dataset",
    "make_transcriber",
    "parse_bounds",
    "score",
    "synthesize",
    "validate_dataset",
]
