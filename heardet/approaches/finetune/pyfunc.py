"""Approach 3's pyfunc: the fine-tuned encoder classifier behind the contract."""

from __future__ import annotations

import math

import pandas as pd

from heardet.approaches.finetune.model import load_classifier
from heardet.audio import AudioError, load_audio
from heardet.mlops.contract import (
    PHRASE_COLUMNS,
    ContractModel,
    Prediction,
    sources_from_frame,
    to_frame,
)


class FinetuneModel(ContractModel):
    """Approach 3: the fine-tuned Whisper encoder classifier (artifact ``classifier``).

    Adds ``window_start_s`` / ``window_end_s`` (where in the recording the best window lies) and, for a
    frame-pooling model, ``phrase_start_s`` / ``phrase_end_s`` (where the phrase is; NaN when label 0,
    for a mean-pooling model and for an unreadable row).
    """

    WINDOW_COLUMNS = ("window_start_s", "window_end_s")
    PHRASE_COLUMNS = PHRASE_COLUMNS
    FLOAT_COLUMNS = WINDOW_COLUMNS + PHRASE_COLUMNS
    _loaded = ("_classifier",)

    def __init__(self, batch_size: int = 8):
        self.batch_size = batch_size
        self._classifier = None

    def load(self, context) -> None:
        self._classifier = load_classifier(context.artifacts["classifier"])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        if self._classifier is None:
            self.load_context(context)
        sources, errors = sources_from_frame(model_input, self.policy)
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
        predictions, columns = [], {name: [] for name in self.FLOAT_COLUMNS}
        for i in range(len(sources)):
            clip = scored.get(i)
            predictions.append(Prediction(clip.label, clip.score) if clip else Prediction(-1, 0.0, errors[i]))
            found = clip is not None and clip.label == 1 and clip.phrase_start_s is not None
            values = (clip.start_s if clip else 0.0, clip.end_s if clip else 0.0,
                      clip.phrase_start_s if found else math.nan, clip.phrase_end_s if found else math.nan)
            for name, value in zip(self.FLOAT_COLUMNS, values):
                columns[name].append(float(value))
        return to_frame(predictions, columns)
