"""The gate's arithmetic: figures per class, folds, and the promotion rule."""

from __future__ import annotations

import numpy as np

from trainer import gate

NAMES = ["apple", "banana", "pear"]


def test_figures_count_accuracy_overall_and_per_true_class() -> None:
    out = gate.figures(["apple", "apple", "banana", "banana"],
                       ["apple", "pear", "banana", "banana"], NAMES)
    assert out["accuracy"] == 0.75
    assert out["per_class"] == {"apple": {"accuracy": 0.5, "images": 2},
                                "banana": {"accuracy": 1.0, "images": 2}}


def test_every_reviewed_photo_is_held_out_exactly_once() -> None:
    for labels in ([0, 0, 0, 1, 1, 1, 2, 2, 2], [0, 0, 1, 1, 2, 2], [0, 1, 2, 2, 2, 2, 2]):
        held = np.concatenate(gate.folds(labels, seed=1))
        assert sorted(held) == list(range(len(labels)))


def test_a_single_reviewed_photo_is_its_own_fold() -> None:
    assert [list(f) for f in gate.folds([2], seed=0)] == [[0]]


def _sets(reviewed: float, test: float) -> dict:
    return {"reviewed": {"accuracy": reviewed}, "base_test": {"accuracy": test}}


def test_a_candidate_within_the_margin_on_both_sets_is_promoted() -> None:
    promote, reason = gate.decide(_sets(0.80, 0.97), _sets(0.60, 0.98), margin=0.02)
    assert promote, reason


def test_a_candidate_worse_on_the_base_test_split_is_rejected_however_good_on_reviews() -> None:
    promote, reason = gate.decide(_sets(1.0, 0.90), _sets(0.5, 0.98), margin=0.02)
    assert not promote
    assert "base test split 90.0% against 98.0%" in reason


def test_a_candidate_worse_on_the_reviewed_photos_is_rejected() -> None:
    promote, reason = gate.decide(_sets(0.5, 1.0), _sets(0.8, 1.0), margin=0.02)
    assert not promote and "reviewed photos" in reason


def test_with_no_version_serving_the_candidate_is_promoted() -> None:
    assert gate.decide(_sets(0.1, 0.1), None, margin=0.02)[0]


def test_the_verdict_holds_both_versions_side_by_side() -> None:
    v = gate.verdict(class_names=NAMES, candidate_version=3,
                     reviewed_truth=["apple", "pear"], reviewed_predicted=["apple", "pear"],
                     test_truth=["banana"], test_predicted=["banana"],
                     serving_version=2, serving_reviewed=["apple", "apple"],
                     serving_test=["banana"], margin=0.02)
    assert v.promote and v.figures["decision"] == "promoted"
    assert v.figures["reviewed"]["candidate"]["accuracy"] == 1.0
    assert v.figures["reviewed"]["serving"]["accuracy"] == 0.5
    assert v.figures["reviewed"]["serving"]["per_class"]["pear"] == {"accuracy": 0.0,
                                                                     "images": 1}
    assert (v.figures["serving_version"], v.figures["candidate_version"]) == (2, 3)
