"""Shared fixtures: a Keras cache holding the real ImageNet weights, small
synthetic photo sets, and one model trained on them for the whole session."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from core.settings import get_settings
from tests.factories import make_dataset

pytest_plugins = ["tests.web_fixtures"]

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

WEIGHTS_FILE = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
SHARED = get_settings().shared_dir

@pytest.fixture(scope="session", autouse=True)
def keras_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Keras cache with the real ImageNet weights, so `weights="imagenet"`
    takes Keras's normal loading path without network access."""
    source = SHARED / "weights" / WEIGHTS_FILE
    if not source.is_file():
        pytest.exit(f"{source} is missing: set SHARED_DIR to the folder holding weights/")
    home = tmp_path_factory.mktemp("keras_home")
    (home / "models").mkdir()
    os.symlink(source, home / "models" / WEIGHTS_FILE)
    os.environ["KERAS_HOME"] = str(home)
    return home


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("shapes"))


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, shapes_dir: Path):
    """One model trained and exported on the shapes, shared by the export tests."""
    from trainer.train import Recipe, train

    recipe = Recipe(epochs=40, augmented_views=1, patience=5)
    return train(shapes_dir, tmp_path_factory.mktemp("models") / "shapes", recipe)


@pytest.fixture(scope="session")
def fruit_model(tmp_path_factory: pytest.TempPathFactory):
    """The reference model: the real fruit photos, the default recipe (about a minute)."""
    from trainer.train import Recipe, train

    return train(get_settings().fruits_dir, tmp_path_factory.mktemp("models") / "fruits",
                 Recipe())


@pytest.fixture
def dataset_copy(tmp_path: Path, shapes_dir: Path) -> Path:
    """A private copy of the shapes a test may spoil."""
    return Path(shutil.copytree(shapes_dir, tmp_path / "data"))
