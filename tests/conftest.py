"""Shared fixtures: a Keras cache holding the real ImageNet weights, small
synthetic photo sets, and one model trained on them for the whole session."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from core.settings import get_settings

pytest_plugins = ["tests.web_fixtures"]

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

WEIGHTS_FILE = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
SHARED = get_settings().shared_dir

# Three classes a pretrained MobileNetV2 tells apart easily, so a few photos
# and seconds of training give a model whose answers mean something.
SHAPES = {
    "circle": ((210, 40, 40), "ellipse"),
    "square": ((40, 170, 60), "rectangle"),
    "triangle": ((50, 70, 200), "polygon"),
}
SUFFIXES = [".jpg", ".png", ".bmp", ".gif", ".webp", ".jpeg"]


def draw_photo(kind: str, seed: int, size: tuple[int, int] = (160, 120)) -> Image.Image:
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 60, (size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(noise + 170)
    color, shape = SHAPES[kind]
    draw = ImageDraw.Draw(image)
    w, h = size
    x, y = int(rng.integers(45, w - 45)), int(rng.integers(40, h - 40))
    r = int(rng.integers(25, 38))
    if shape == "ellipse":
        draw.ellipse((x - r, y - r, x + r, y + r), fill=color)
    elif shape == "rectangle":
        draw.rectangle((x - r, y - r, x + r, y + r), fill=color)
    else:
        draw.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=color)
    return image


def make_dataset(root: Path, per_class: dict[str, int] | None = None) -> Path:
    """A folder-per-class photo set in every supported format."""
    per_class = per_class or dict.fromkeys(SHAPES, 14)
    for c, (kind, count) in enumerate(per_class.items()):
        folder = root / kind
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            suffix = SUFFIXES[i % len(SUFFIXES)]
            draw_photo(kind if kind in SHAPES else "circle", seed=1000 * c + i).save(
                folder / f"{kind}_{i:03d}{suffix}")
    return root


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
