"""Shared fixtures: a Keras cache holding the real ImageNet weights, small
synthetic photo sets, and one model trained on them for the whole session.

Under pytest-xdist the photo set and each model are made once per run, by the
first worker that needs them, in a folder all the workers share; the others
wait on a lock and use the exported result (see `made_once`). The modules in
TOGETHER each run on one worker (`pytest_xdist_make_scheduler`).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import TypeVar

import pytest
from filelock import FileLock

from core.settings import get_settings
from tests.factories import make_dataset

pytest_plugins = ["tests.web_fixtures"]

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

WEIGHTS_FILE = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
SHARED = get_settings().shared_dir

T = TypeVar("T")

#: Tests one xdist worker runs, one after the other, by node id prefix (a module, or
#: the start of test names in it; the longest prefix wins). Everything else is handed
#: out test by test. Module-scoped servers then start once per group, and the fruit
#: model's training (minutes) is done by the worker that then serves it.
TOGETHER = {
    "tests/test_fault_drills.py": "fault drills",  # a restartable Serving per group
    # the two kill -9 drills wait over a minute each for RQ: beside the others, not after
    "tests/test_fault_drills.py::test_a_worker_killed_": "worker kill drills",
    "tests/test_fruits.py": "fruit model",
    "tests/test_serving_images.py": "fruit model",
    "tests/test_browser.py": "browser",  # one Chromium
    "tests/test_serving_contract.py": "half_plus_two",
    "tests/test_rollout_pipeline.py": "rollout",  # three versions in one Serving
}


def group_of(nodeid: str) -> str:
    """The TOGETHER group of a test, or its own node id when it has none."""
    prefixes = [prefix for prefix in TOGETHER if nodeid.startswith(prefix)]
    return TOGETHER[max(prefixes, key=len)] if prefixes else nodeid


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """`--dist loadgroup` by TOGETHER. xdist 3.8 groups `xdist_group` marks by renaming
    items' node ids, which pytest 9 no longer reads, so its own loadgroup silently
    runs a group's tests on every worker; this scheduler groups by node id instead."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class Together(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return group_of(nodeid)

    return Together(config, log)


def made_once(tmp_path_factory: pytest.TempPathFactory, name: str,
              make: Callable[[Path], T], load: Callable[[Path], T]) -> T:
    """`make(folder)` in a folder of its own; under xdist only in the first worker
    to get here, the others waiting on a lock and then calling `load(folder)` on
    what it left. A worker whose `make` failed leaves no mark, so the next one
    tries again (and fails with its own traceback)."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return make(tmp_path_factory.mktemp(name))
    run = tmp_path_factory.getbasetemp().parent  # one per run, above every worker's own
    folder, done = run / name, run / f"{name}.done"
    with FileLock(run / f"{name}.lock"):
        if done.exists():
            return load(folder)
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        made = make(folder)
        done.touch()
        return made


class Exported:
    """What `trainer.train.train` returned in another xdist worker, read back from
    its folder: the same fields (version, version_dir, report_dir, metrics, and the
    Keras model, loaded on first use since few tests need it)."""

    def __init__(self, folder: Path):
        paths = json.loads((folder / "result.json").read_text())
        self.version = paths["version"]
        self.version_dir = Path(paths["version_dir"])
        self.report_dir = Path(paths["report_dir"])
        self.metrics = json.loads((self.report_dir / "metrics.json").read_text())
        self._keras_file = folder / "keras" / "model.keras"

    @cached_property
    def model(self):
        import keras

        return keras.saving.load_model(self._keras_file)


def train_and_export(data_dir: Path, folder: Path, name: str, check_data: Path | None = None,
                     **recipe):
    """Trains into folder/<name> and leaves what `Exported` reads beside it."""
    from trainer.recipe import Recipe
    from trainer.train import train

    result = train(data_dir, folder / name, Recipe(**recipe), check_data=check_data)
    if os.environ.get("PYTEST_XDIST_WORKER"):
        (folder / "keras").mkdir()
        result.model.save(folder / "keras" / "model.keras")
        (folder / "result.json").write_text(json.dumps({
            "version": result.version, "version_dir": str(result.version_dir),
            "report_dir": str(result.report_dir)}))
    return result


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
    """The shapes in every format, 14 a class: made once, never changed (see dataset_copy)."""
    return made_once(tmp_path_factory, "shapes", make_dataset, lambda folder: folder)


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, shapes_dir: Path):
    """One model trained and exported on the shapes, shared by the export tests."""
    return made_once(tmp_path_factory, "shapes_model",
                     lambda folder: train_and_export(shapes_dir, folder, "shapes", epochs=40,
                                                     augmented_views=1, patience=5),
                     Exported)


@pytest.fixture(scope="session")
def fruit_model(tmp_path_factory: pytest.TempPathFactory, trained):
    """The reference model: the real fruit photos, the default recipe (about a minute).
    After `trained`, which most of the suite waits for under xdist (Serving, the drills,
    the browser): two trainings at once on 2 cores would make that wait twice as long."""
    return made_once(tmp_path_factory, "fruit_model",
                     lambda folder: train_and_export(
                         get_settings().fruits_dir, folder, "fruits",
                         check_data=get_settings().check_photos_dir),
                     Exported)


@pytest.fixture
def dataset_copy(tmp_path: Path, shapes_dir: Path) -> Path:
    """A private copy of the shapes a test may spoil."""
    return Path(shutil.copytree(shapes_dir, tmp_path / "data"))
