"""train() as a training run calls it: reviewed photos, progress, the feature
cache, candidates, calibration and photos from elsewhere."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core import model_files
from core.training import Phase, overall
from tests.factories import Cancelled, RecordedProgress, make_dataset
from trainer import data, export
from trainer.errors import DatasetError
from trainer.features import FeatureCache

RECIPE = {"epochs": 10, "augmented_views": 1, "patience": 5, "tflite": False,
          "accelerated": False}


def reviewed_photos(folder: Path, per_class: dict[str, int]) -> list[data.Example]:
    """Photos as the image store holds them: by hash, outside the data set."""
    made = make_dataset(folder, per_class)
    names = sorted(per_class)
    return [data.Example(p, ["circle", "square", "triangle"].index(p.parent.name))
            for name in names for p in sorted((made / name).iterdir())]


@pytest.fixture(scope="module")
def run(tmp_path_factory, shapes_dir: Path):
    from trainer.recipe import Recipe
    from trainer.train import train

    tmp = tmp_path_factory.mktemp("run")
    extra = reviewed_photos(tmp / "store", {"circle": 3, "square": 2})
    progress = RecordedProgress()
    cache = FeatureCache(tmp / "features")
    result = train(shapes_dir, tmp / "shapes", Recipe(**RECIPE), extra=extra, progress=progress,
                   cache=cache, candidate=True,
                   shift_data=make_dataset(tmp / "elsewhere", {"circle": 3, "triangle": 3}))
    return result, extra, progress, cache, tmp


def test_a_candidate_is_published_under_candidates_and_not_served(run):
    result, *_, tmp = run
    model_dir = tmp / "shapes"
    assert result.version_dir == model_files.candidate_dir(model_dir, result.version)
    assert (result.version_dir / "saved_model.pb").is_file()
    assert export.versions(model_dir) == []  # nothing for Serving to load
    assert not list(model_dir.glob(".staging-*"))
    assert export.reserve_version(model_dir)[0] == result.version + 1


def test_reviewed_photos_join_the_training_split_only(run, shapes_dir: Path):
    result, extra, *_ = run
    base = data.split(data.scan(shapes_dir, progress=False).examples, seed=42)
    assert result.parts == base  # validation and test stay the base photos' split
    metrics = result.metrics
    assert metrics["data"]["reviewed_images"] == 5
    assert metrics["data"]["split"]["train"] == len(base.train) + 5
    assert metrics["data"]["split"]["test"] == len(base.test)
    manifest = json.loads((result.report_dir / "manifest.json").read_text())
    assert len(manifest["base"]) == metrics["data"]["images"]
    assert {"path", "sha256", "label"} == set(manifest["base"][0])
    assert [r["label"] for r in manifest["reviewed"]] == ["circle"] * 3 + ["square"] * 2
    assert manifest["reviewed"][0]["sha256"] == data.file_sha256(extra[0].path)


def test_the_result_carries_what_the_gate_needs(run):
    result, *_ = run
    assert result.class_names == ["circle", "square", "triangle"]
    assert result.recipe.tflite is False and result.base.name == "features"
    assert "tflite_int8" not in result.metrics["artifacts"]
    assert set(result.metrics["test"]["per_class"]) == set(result.class_names)


def test_progress_moves_forward_through_every_phase_and_names_the_version(run):
    result, _, progress, *_ = run
    assert progress.versions == [result.version]
    phases = [phase for phase, _ in progress.phases]
    assert set(phases) == {Phase.CHECKING, Phase.FEATURES, Phase.HEAD, Phase.CALIBRATION,
                           Phase.EXPORT}
    done = [overall(phase, fraction) for phase, fraction in progress.phases]
    assert done == sorted(done) and done[-1] == overall(Phase.EXPORT, 1.0)
    assert phases.count(Phase.FEATURES) >= 7 and phases.count(Phase.HEAD) >= 3


def test_scores_are_calibrated_and_the_report_says_by_how_much(run):
    result, *_ = run
    calibration = result.metrics["calibration"]
    assert 0.05 <= calibration["temperature"] <= 20
    assert set(calibration["ece_before"]) == set(calibration["ece_after"]) == {"val", "test"}
    # verify() compared the export with the calibrated head: Serving answers calibrated.
    assert result.metrics["artifacts"]["saved_model"]["test_accuracy"] == \
        result.metrics["test"]["accuracy"]


def test_photos_from_elsewhere_are_scored_per_class(run):
    result, *_, tmp = run
    shift = result.metrics["shift"]
    assert shift["data"] == str(tmp / "elsewhere") and shift["images"] == 6
    assert set(shift["per_class"]) == {"circle", "triangle"}
    assert shift["accuracy"] >= 0.5


def test_a_second_run_with_more_reviewed_photos_computes_only_theirs(run, shapes_dir: Path):
    from trainer.recipe import Recipe
    from trainer.train import train

    first, extra, _, cache, tmp = run
    more = extra + reviewed_photos(tmp / "store2", {"triangle": 2})
    again = FeatureCache(cache.folder)
    result = train(shapes_dir, tmp / "shapes", Recipe(**RECIPE), extra=more, cache=again,
                   candidate=True)
    assert again.computed == 2 * 2  # the plain and the augmented view of the 2 new photos
    assert result.metrics["features_computed"] == 4
    assert result.version > first.version  # (another test reserved a number in between)


@pytest.mark.parametrize("phase", [Phase.FEATURES, Phase.HEAD, Phase.EXPORT])
def test_a_cancel_from_the_progress_reporter_leaves_nothing_behind(tmp_path: Path,
                                                                   shapes_dir: Path, phase):
    from trainer.recipe import Recipe
    from trainer.train import train

    model_dir = tmp_path / "shapes"
    progress = RecordedProgress(cancel_at=phase)
    with pytest.raises(Cancelled):
        train(shapes_dir, model_dir, Recipe(epochs=2, augmented_views=0, tflite=False,
                                           accelerated=False),
              progress=progress, candidate=True)
    left = [p.relative_to(model_dir) for p in model_dir.rglob("*")]
    assert left in ([], [Path("reports")])


def test_reviewed_photos_with_a_label_outside_the_classes_are_refused(tmp_path: Path,
                                                                     shapes_dir: Path):
    from trainer.recipe import Recipe
    from trainer.train import train

    extra = reviewed_photos(tmp_path / "store", {"circle": 1})
    with pytest.raises(DatasetError, match="not one of the 3 classes"):
        train(shapes_dir, tmp_path / "m", Recipe(), extra=[data.Example(extra[0].path, 7)])
