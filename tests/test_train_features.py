"""The feature cache: a run computes the base's features only for photos (and
views) no earlier run computed with the same weights."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.factories import draw_photo, make_dataset, photo_file
from trainer import data, export, fast_base
from trainer.features import FeatureCache


@pytest.fixture(scope="module")
def base():
    from trainer.model import build_base

    return build_base("imagenet")


@pytest.fixture
def photos(tmp_path: Path) -> list[data.Example]:
    return sorted(data.scan(make_dataset(tmp_path / "photos", {"circle": 3, "square": 3}),
                            progress=False).examples, key=lambda e: e.path)


def test_only_new_photos_go_through_the_base(tmp_path: Path, base, photos):
    cache = FeatureCache(tmp_path / "cache")
    first = cache.features(base, photos, view="plain", desc="first")
    assert cache.computed == 6
    new = [data.Example(photo_file(tmp_path / "new", "triangle", seed=7 + i), 2) for i in range(2)]
    again = cache.features(base, photos + new, view="plain", desc="again")
    assert cache.computed == 6 + 2
    np.testing.assert_array_equal(again[:6], first)
    uncached = FeatureCache(None).features(base, photos + new, view="plain", desc="uncached")
    np.testing.assert_allclose(again, uncached, atol=1e-5)


def test_another_view_another_base_or_changed_bytes_are_computed_anew(tmp_path: Path, base,
                                                                      photos):
    from trainer.model import build_base

    cache = FeatureCache(tmp_path / "cache")
    cache.features(base, photos, view="plain", desc="plain")
    cache.features(base, photos, view="degraded-blur", desc="blurred",
                   render=lambda path: path.read_bytes())
    assert cache.computed == 12
    cache.features(build_base("none"), photos, view="plain", desc="random weights")
    assert cache.computed == 18
    draw_photo("circle", seed=4242).save(photos[0].path)
    cache.features(base, photos, view="plain", desc="changed")
    assert cache.computed == 19
    shutil.copy(photos[3].path, photos[1].path)
    cache.features(base, photos, view="plain", desc="a copy")
    assert cache.computed == 19  # the same bytes under another name: the same key


def test_a_cache_shared_by_two_processes_reads_what_the_other_wrote(tmp_path: Path, base,
                                                                    photos):
    FeatureCache(tmp_path / "cache").features(base, photos, view="plain", desc="one")
    other = FeatureCache(tmp_path / "cache")
    other.features(base, photos, view="plain", desc="two")
    assert other.computed == 0
    assert not list((tmp_path / "cache").rglob(".tmp-*"))


def test_a_damaged_entry_is_computed_again(tmp_path: Path, base, photos):
    cache = FeatureCache(tmp_path / "cache")
    cache.features(base, photos, view="plain", desc="one")
    next((tmp_path / "cache").rglob("*.npy")).write_bytes(b"cut short")
    again = FeatureCache(tmp_path / "cache")
    again.features(base, photos, view="plain", desc="two")
    assert again.computed == 1


def test_litert_runs_the_base_with_the_features_keras_gives(tmp_path: Path, base, photos):
    keras_features = FeatureCache(None).features(base, photos, view="plain", desc="keras")
    cache = FeatureCache(tmp_path / "cache", runtime="litert")
    lite = cache.features(base, photos, view="plain", desc="litert")
    assert cache.used["runtime"] == "litert"
    assert cache.used["litert_max_difference"] <= fast_base.FEATURE_TOLERANCE
    np.testing.assert_allclose(lite, keras_features, atol=fast_base.FEATURE_TOLERANCE)
    kept = tmp_path / "cache" / "bases" / f"{cache.fingerprint(base)}.tflite"
    assert kept.read_bytes()[4:8] == b"TFL3"


def test_a_converted_base_is_read_back_not_converted_again(tmp_path: Path, base, photos,
                                                           monkeypatch):
    FeatureCache(tmp_path / "cache", runtime="litert").features(base, photos[:2], view="plain",
                                                                desc="first")

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again")

    monkeypatch.setattr(export, "tflite_model", no_conversion)
    again = FeatureCache(tmp_path / "cache", runtime="litert")
    again.features(base, photos[2:], view="plain", desc="second")
    assert again.used["runtime"] == "litert" and again.computed == 4


def test_keras_runs_the_pass_when_litert_features_are_not_its_own(tmp_path: Path, base,
                                                                  photos, monkeypatch):
    monkeypatch.setattr(fast_base, "FEATURE_TOLERANCE", -1.0)
    cache = FeatureCache(None, runtime="litert")
    features = cache.features(base, photos, view="plain", desc="refused")
    assert cache.used["runtime"] == "keras" and cache.used["litert_max_difference"] >= 0
    np.testing.assert_allclose(features, FeatureCache(None).features(
        base, photos, view="plain", desc="keras"), atol=1e-5)
