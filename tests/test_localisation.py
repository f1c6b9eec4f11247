"""Localisation error: how far a model's phrase times are from the bounds, on the clips it found."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from heardet.data import Clip, Dataset
from heardet.mlops.tracking import localisation_errors


def test_the_error_is_the_worse_end_against_the_nearest_bound_on_found_phrases_only():
    test = (Clip("a", Path("a.wav"), "test", 1, ((1.0, 1.6), (3.0, 3.5))), Clip("b", Path("b.wav"), "test", 1, ((0.5, 1.0),)),
            Clip("c", Path("c.wav"), "test", 0), Clip("d", Path("d.wav"), "test", 1, ((2.0, 2.4),)))
    predictions = pd.DataFrame({
        "id": ["a", "b", "c", "d"], "label": [1, 1, 1, 0],
        "phrase_start_s": [3.1, 0.4, 0.0, np.nan], "phrase_end_s": [3.45, 1.3, 0.5, np.nan]})
    errors = localisation_errors(predictions, Dataset(Path("."), (), test))
    assert errors.tolist() == pytest.approx([0.1, 0.3]), "a: nearest bound (3.0-3.5); b: end off by 0.3; c, d skipped"


def test_a_model_that_does_not_localise_has_no_errors():
    predictions = pd.DataFrame({"id": ["a"], "label": [1]})
    assert len(localisation_errors(predictions, Dataset(Path("."), (), ()))) == 0
