"""Which tracking store a command reads, and MLflow's download bars; real files, real MLflow."""

import pytest
from mlflow.utils.file_utils import ArtifactProgressBar

from heardet.mlops.store import (
    StoreError,
    find_store,
    quiet_downloads,
    registered_model_name,
    resolve_tracking_uri,
)


@pytest.mark.parametrize("uri,name", [
    ("models:/heardet-ensemble@production", "heardet-ensemble"),
    ("models:/heardet-rule/3", "heardet-rule"),
    ("models:/heardet-rule/latest", "heardet-rule"),
    ("models:/m-0123456789abcdef", None),  # a logged model's id, not a registered name
    ("runs:/abc/model", None),
    ("/srv/models/rule", None),
])
def test_a_registered_name_is_read_only_from_uris_that_name_one(uri, name):
    assert registered_model_name(uri) == name


def test_the_nearest_mlflow_db_above_the_current_folder_is_the_store(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "mlflow.db").write_bytes(b"")
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    assert find_store(deep) == tmp_path / "mlflow.db"
    assert resolve_tracking_uri(start=deep) == f"sqlite:///{(tmp_path / 'mlflow.db').as_posix()}"


def test_an_explicit_uri_wins_over_the_environment_and_a_db_path_becomes_a_sqlite_uri(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking:5000")
    assert resolve_tracking_uri() == "http://tracking:5000"
    (tmp_path / "other.db").write_bytes(b"")
    assert resolve_tracking_uri(str(tmp_path / "other.db")) == f"sqlite:///{(tmp_path / 'other.db').as_posix()}"


def test_a_sqlite_store_named_in_the_environment_must_exist(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'gone.db'}")
    with pytest.raises(StoreError, match="from MLFLOW_TRACKING_URI.*no such file"):
        resolve_tracking_uri()
    assert not (tmp_path / "gone.db").exists()


def test_quiet_downloads_hides_mlflows_bars_and_respects_a_users_choice(monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)  # the suite hides tqdm; MLflow's switch is tested here
    monkeypatch.delenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", raising=False)
    with ArtifactProgressBar.files("Downloading artifacts", total=3) as bar:
        assert bar.pbar is not None, "MLflow shows a bar by default"
    with quiet_downloads(), ArtifactProgressBar.files("Downloading artifacts", total=3) as bar:
        assert bar.pbar is None
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "true")
    with quiet_downloads(), ArtifactProgressBar.files("Downloading artifacts", total=3) as bar:
        assert bar.pbar is not None
