"""heardet: detect whether a spoken phrase (default «не слышу») occurs in audio recordings.

Nothing heavy is imported here: ``import heardet`` stays fast, and torch, transformers and
MLflow load only when a function that needs them is called.
"""

from heardet.audio import SAMPLE_RATE, AudioError, Window, iter_windows, load_audio
from heardet.data import Clip, DataError, Dataset, ValidationReport, load_dataset, parse_bounds, validate_dataset
from heardet.synth import SynthConfig, SynthReport, synthesize

__version__ = "0.1.0"

__all__ = [
    "SAMPLE_RATE",
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
    "parse_bounds",
    "synthesize",
    "validate_dataset",
]
