"""What approaches 1 and 2 share: a pyfunc that transcribes each row with Whisper, then decides on the text."""

from __future__ import annotations

from dataclasses import fields

import pandas as pd

from heardet.mlops.contract import (
    ContractModel,
    Prediction,
    sources_from_frame,
    to_frame,
)


class TranscribingModel(ContractModel):
    """Whisper transcribes each row (through the transcript cache); :meth:`decide` labels the texts."""

    _loaded = ("_transcriber",)

    def __init__(self, asr_model: str, backend: str, options: dict):
        self.asr_model, self.backend, self.options = asr_model, backend, dict(options)
        self._transcriber = None

    def load(self, context) -> None:
        from heardet.whisper.asr import DecodeOptions, make_transcriber

        # One process imports one heardet (the first model's code copy), e.g. inside an
        # ensemble; options this version does not know are dropped, missing ones default.
        known = {f.name for f in fields(DecodeOptions)}
        options = DecodeOptions(**{k: v for k, v in self.options.items() if k in known})
        self._transcriber = make_transcriber(self.asr_model, self.backend, options)

    def describe(self) -> str:
        return f"{type(self).__name__} (Whisper {self.asr_model}, {self.backend})"

    def decide(self, texts: list[str]) -> list[tuple[int, float]]:
        """(label, score) per transcript."""
        raise NotImplementedError

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        if self._transcriber is None:
            self.load_context(context)
        sources, errors = sources_from_frame(model_input, self.policy)
        rows = [i for i, s in enumerate(sources) if s is not None]
        results = self._transcriber.transcribe([sources[i] for i in rows], progress=False)  # default cache
        texts = dict(zip(rows, results))
        ok = [i for i in rows if not texts[i].error]
        decisions = dict(zip(ok, self.decide([texts[i].text for i in ok])))
        predictions = []
        for i in range(len(sources)):
            if i in decisions:
                predictions.append(Prediction(decisions[i][0], decisions[i][1]))
            else:
                predictions.append(Prediction(-1, 0.0, errors[i] or texts[i].error))
        return to_frame(predictions)
