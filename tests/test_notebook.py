"""The walkthrough notebook runs top to bottom, headless the way notebooks/README.md says, on
a store the test builds.

The store holds what `make demo` would leave, shrunk: rule members over a tiny random
CTranslate2 Whisper, an ensemble of them registered as heardet-ensemble and promoted to
Production (loaded by URI in the kernel process), and CatBoost runs with per-fold metrics.
"""

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import nbformat
import pytest
from ct2_fixture import write_tiny_ct2

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
WALKTHROUGH = NOTEBOOKS / "walkthrough.ipynb"


@pytest.fixture
def demo_store(tmp_path, mlflow_store, phrase_dataset, monkeypatch):
    """A tracking store with a Production ensemble and an older and a newer CatBoost run.

    Returns:
        The newer and the older CatBoost run ids.
    """
    from heardet.approaches.ensemble import EnsembleModel
    from heardet.approaches.rule import RuleModel
    from heardet.mlops.contract import log_contract_model
    from heardet.mlops.registry import promote

    monkeypatch.setenv("HEARDET_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HEARDET_DATA", str(phrase_dataset))
    monkeypatch.setenv("HEARDET_MODEL_URI", "models:/heardet-ensemble@production")
    tiny = write_tiny_ct2(tmp_path / "tiny", source_positions=1500, target_positions=448)
    options = {"language": "ru", "beam_size": 1, "temperature_fallback": False, "word_timestamps": False}
    uris = []
    for i, rule in enumerate(["a", "b"]):
        with mlflow.start_run(tags={"approach": "rule"}):  # no metrics: the table shows NaN
            log_contract_model(RuleModel(str(tiny.ct2_dir), "faster-whisper", options, rule, "abc"), "model",
                               registered_model_name=f"member-{i}")
        uris.append(f"models:/member-{i}/1")
    ensemble = EnsembleModel(uris)
    with mlflow.start_run(tags={"approach": "ensemble"}):
        log_contract_model(ensemble, "model", artifacts=dict(zip(ensemble.keys, uris)),
                           registered_model_name="heardet-ensemble", extra_int_columns=ensemble.keys)
        mlflow.log_metrics({"test_macro_f1": 0.5, "wall_seconds": 2.0})
    promote("heardet-ensemble", 1, progress=False)

    run_ids = []
    for folds in ([0.2, 0.3], [0.6, 0.8]):
        with mlflow.start_run(tags={"approach": "catboost"}) as run:
            for step, f1 in enumerate(folds):
                mlflow.log_metric("cv_fold_macro_f1", f1, step=step)
            mlflow.log_metrics({"cv_macro_f1_mean": sum(folds) / 2, "test_macro_f1": 0.75, "train_macro_f1": 1.0})
        run_ids.append(run.info.run_id)
    return run_ids[1], run_ids[0]


def cell_text(nb, tag: str) -> str:
    """The plain-text outputs of the cell tagged ``tag``."""
    cell = next(c for c in nb.cells if tag in c.metadata.get("tags", []))
    return "\n".join(o.get("text", "") or o.get("data", {}).get("text/plain", "") for o in cell.outputs)


def documented_command() -> list[str]:
    """The headless command of notebooks/README.md, as the argv it runs in notebooks/ (its
    ``../.venv/bin/jupyter`` is the jupyter beside the Python running the tests)."""
    blocks = re.findall(r"```bash\n(.*?)```", (NOTEBOOKS / "README.md").read_text(encoding="utf-8"), re.DOTALL)
    lines = [line for block in blocks for line in block.splitlines() if "jupyter" in line]
    assert len(lines) == 1, f"expected one jupyter command in notebooks/README.md, found {lines}"
    cd, command = lines[0].split("&&", 1)
    assert cd.split() == ["cd", "notebooks"], f"the command should run in notebooks/: {lines[0]}"
    argv = shlex.split(command, comments=True)
    assert argv[0].endswith("jupyter"), argv
    return [str(Path(sys.executable).parent / "jupyter"), *argv[1:]]


def test_the_documented_command_runs_the_walkthrough_into_a_separate_file(demo_store, phrase_dataset, tmp_path):
    newer_catboost, older_catboost = demo_store
    committed = WALKTHROUGH.read_bytes()
    notebooks = shutil.copytree(NOTEBOOKS, tmp_path / "notebooks")  # what the command writes stays in tmp_path
    done = subprocess.run(documented_command(), cwd=notebooks, capture_output=True, text=True, timeout=600,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (notebooks / "walkthrough.ipynb").read_bytes() == committed, "the documented command changed the notebook"
    assert WALKTHROUGH.read_bytes() == committed
    written = sorted(p.name for p in notebooks.glob("*.ipynb") if p.name != "walkthrough.ipynb")
    assert written == ["walkthrough.out.ipynb"], f"expected the executed copy beside the notebook, found {written}"
    nb = nbformat.read(notebooks / "walkthrough.out.ipynb", as_version=4)

    runs = cell_text(nb, "runs")
    assert newer_catboost in runs and older_catboost not in runs, f"runs table should list the latest catboost run:\n{runs}"
    assert "rule" in runs and "ensemble" in runs, f"runs table misses an approach:\n{runs}"
    scored = cell_text(nb, "score")
    for clip in sorted(p.stem for p in (phrase_dataset / "wav_test").glob("*.wav")):
        assert clip in scored, f"scoring table misses {clip}:\n{scored}"
    assert "vote_" in scored, f"the ensemble's vote columns are missing:\n{scored}"
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= 2, f"expected the comparison and waveform plots, got {len(images)} images"


def test_committed_walkthrough_has_no_outputs():
    nb = nbformat.read(WALKTHROUGH, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"clear the outputs of cells {dirty} before committing"
