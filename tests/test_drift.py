"""Drift (core/rollout/drift.py): the population stability index on known
distributions, the reference a real training writes (and that it is what
Serving answers), measure() on records written straight to both databases,
the workers' check recording one event a window, and the statistics page."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue
from sqlalchemy import delete, select

from core.lifecycle.connections import Connections
from core.rollout import drift
from core.rollout.records import RolloutEvent
from core.settings import get_settings
from tests.factories import add_answers, model_version_files, session, webhook_receiver

CLASSES = ["circle", "square", "triangle"]
#: The validation split the tests' versions were "trained" with: 40 photos, a third
#: of each class give or take, most answered above 0.95.
VAL = (["circle"] * 14 + ["square"] * 13 + ["triangle"] * 13,
       [0.999] * 30 + [0.97] * 6 + [0.85] * 4)
#: Answers alike the validation split's, a hundred and twenty of them.
ALIKE = {("circle", 0.999): 31, ("square", 0.999): 28, ("triangle", 0.999): 31,
         ("circle", 0.97): 11, ("square", 0.97): 8, ("triangle", 0.85): 11}
#: Photos from elsewhere: mostly circles, and unsure.
SHIFTED = {("circle", 0.62): 70, ("circle", 0.999): 20, ("square", 0.75): 20,
           ("triangle", 0.55): 10}


@pytest.fixture
def model(env: dict[str, str], monkeypatch) -> Path:
    """Versions 3 (with the reference VAL) and 2 (a report from before references),
    and drift settings with a minimum of 100 predictions."""
    monkeypatch.setenv("DRIFT_MIN_PREDICTIONS", "100")
    folder = Path(env["MODEL_BASE_PATH"]) / env["MODEL_NAME"]
    model_version_files(folder, 3, metrics={"class_names": CLASSES,
                                            "reference": drift.reference(CLASSES, *VAL)})
    model_version_files(folder, 2, metrics={"class_names": CLASSES})
    return folder


@pytest.fixture
def no_events(db):
    with db.session() as opened:
        opened.execute(delete(RolloutEvent))


def drift_events(url: str) -> list[RolloutEvent]:
    with session(url) as opened:
        return list(opened.scalars(select(RolloutEvent).where(RolloutEvent.kind == "drift")))


def measured(db, version: int = 3) -> drift.Drift | None:
    with db.session() as opened:
        return drift.measure(opened, get_settings(), version)


# --- the index --------------------------------------------------------------------------------

def test_the_same_mix_has_no_drift() -> None:
    assert drift.psi([0.25, 0.25, 0.5], [0.25, 0.25, 0.5]) == 0.0
    assert drift.psi([1.0, 0.0, 0.0], [1.0, 0.0, 0.0]) == 0.0  # empty bins on both sides


def test_a_shifted_mix_has_the_index_worked_out_by_hand() -> None:
    # (0.9 - 0.5) ln(0.9 / 0.5) + (0.1 - 0.5) ln(0.1 / 0.5) = 0.4 ln 1.8 + 0.4 ln 5
    assert drift.psi([0.5, 0.5], [0.9, 0.1]) == pytest.approx(0.878890, abs=1e-6)
    # Symmetric: the same figure whichever side is the reference.
    assert drift.psi([0.9, 0.1], [0.5, 0.5]) == pytest.approx(0.878890, abs=1e-6)
    # A small move stays far under the "worth a look" figure of 0.1:
    # -0.05 ln 0.9 + 0.03 ln 1.1 + 0.02 ln 1.1
    assert drift.psi([0.5, 0.3, 0.2], [0.45, 0.33, 0.22]) == pytest.approx(0.010034, abs=1e-6)


def test_an_empty_reference_bin_counts_as_epsilon() -> None:
    # (0.1 - 1e-4) ln(0.1 / 1e-4) + (0.9 - 1) ln 0.9
    expected = (0.1 - 1e-4) * math.log(1000) - 0.1 * math.log(0.9)
    assert drift.psi([1.0, 0.0], [0.9, 0.1]) == pytest.approx(expected)
    assert drift.psi([1.0, 0.0], [0.9, 0.1]) == pytest.approx(0.700621, abs=1e-6)
    with pytest.raises(ValueError):
        drift.psi([0.5, 0.5], [1.0])


def test_the_confidence_bins_hold_their_lower_edge_and_the_last_holds_one() -> None:
    assert [drift.confidence_bin(s) for s in (0.0, 0.4999, 0.5, 0.6, 0.94999, 0.95, 0.99, 1.0)] \
        == [0, 0, 1, 2, 5, 6, 7, 7]
    # A float a hair past either end stays in the end bins.
    assert drift.confidence_bin(1.0000001) == len(drift.CONFIDENCE_EDGES) - 2
    assert drift.confidence_bin(-0.1) == 0


# --- the reference in a real report -----------------------------------------------------------

def test_a_trained_version_records_its_validation_reference(trained, shapes_server) -> None:
    metrics = trained.metrics
    ref = metrics["reference"]
    assert ref["split"] == "val" and ref["images"] == metrics["data"]["split"]["val"]
    assert ref["confidence_edges"] == list(drift.CONFIDENCE_EDGES)
    assert list(ref["class_mix"]) == metrics["class_names"]
    assert sum(ref["class_mix"].values()) == pytest.approx(1.0)
    assert sum(ref["confidence_mix"]) == pytest.approx(1.0)
    assert drift.Reference.parse(ref) is not None
    # The mixes are those of what Serving answers on the validation photos.
    root = Path(metrics["data"]["root"])
    photos = [root / line.split("\t")[1]
              for line in (trained.report_dir / "val.txt").read_text().splitlines()]
    with shapes_server.client("classifier") as client:
        answers = client.classify([p.read_bytes() for p in photos])
    served = drift.reference(metrics["class_names"], [a.label for a in answers],
                             [a.confidence for a in answers])
    assert served["class_mix"] == pytest.approx(ref["class_mix"])
    assert served["confidence_mix"] == pytest.approx(ref["confidence_mix"])


@pytest.mark.parametrize("entry", [None, "val", {"images": 3}, {
    "images": 3, "class_mix": {"a": 1.0}, "confidence_edges": [0, 1, 0.5],
    "confidence_mix": [1.0, 0.0]}, {
    "images": "many", "class_mix": {"a": 1.0}, "confidence_edges": [0, 0.5, 1],
    "confidence_mix": [1.0, 0.0]}, {
    "images": 3, "class_mix": {"a": float("nan")}, "confidence_edges": [0, 0.5, 1],
    "confidence_mix": [1.0, 0.0]}])
def test_a_reference_that_is_missing_or_mangled_is_no_reference(entry) -> None:
    assert drift.Reference.parse(entry) is None


# --- measure ----------------------------------------------------------------------------------

def test_answers_like_the_validation_split_do_not_drift(model, db, store) -> None:
    add_answers(db, 3, ALIKE)
    found = measured(db)
    assert found.predictions == 120 and found.reference_images == 40
    assert found.psi_class_mix < 0.02 and found.psi_confidence < 0.02
    assert (found.threshold, found.window_hours) == (0.25, 24)
    assert not found.alert
    shares = {s.name: (s.now, s.reference) for s in found.classes}
    assert shares["circle"] == (pytest.approx(42 / 120), pytest.approx(14 / 40))
    assert json.loads(json.dumps(found.as_json()))["alert"] is False


def test_answers_from_elsewhere_drift_once_there_are_enough(model, db, store, monkeypatch) -> None:
    add_answers(db, 3, SHIFTED)
    found = measured(db)
    assert found.predictions == 120
    assert found.psi_class_mix > 0.25 and found.psi_confidence > 0.25
    assert found.alert and found.worst == found.psi_confidence
    bins = {s.name: s.now for s in found.confidence}
    assert bins["0.6-0.7"] == pytest.approx(70 / 120) and list(bins)[-1] == "0.99-1"
    # The same answers, a minimum above their count: figures, but no alert.
    monkeypatch.setenv("DRIFT_MIN_PREDICTIONS", "121")
    found = measured(db)
    assert found.psi_class_mix > 0.25 and not found.alert and not found.enough
    # A higher threshold than either index: no alert either.
    monkeypatch.setenv("DRIFT_MIN_PREDICTIONS", "100")
    monkeypatch.setenv("DRIFT_THRESHOLD", "50")
    assert not measured(db).alert


def test_only_the_versions_answers_in_the_window_count(model, db, store) -> None:
    add_answers(db, 3, ALIKE)
    add_answers(db, 3, SHIFTED, hours_ago=25)  # before the window
    add_answers(db, 4, SHIFTED)  # another version
    add_answers(db, 3, {("circle", 0.6): 50}, status="failed")  # not answers
    found = measured(db)
    assert found.predictions == 120 and not found.alert


def test_a_version_without_a_reference_says_so(model, db, store) -> None:
    assert measured(db, 2) is None
    assert measured(db, 9) is None  # no report at all
    add_answers(db, 2, SHIFTED)
    add_answers(db, 3, {("circle", 0.999): 5})
    with db.session() as opened:
        found = drift.recent(opened, get_settings())
    assert [(d.version, d.predictions, d.reference_images) for d in found] == [
        (3, 5, 40), (2, 120, None)]
    assert not found[1].alert and found[1].psi_class_mix is None


def test_a_class_the_validation_split_never_answered_counts(model, db, store) -> None:
    add_answers(db, 3, ALIKE | {("pear", 0.999): 12})
    found = measured(db)
    assert [s.name for s in found.classes][-1] == "pear"
    assert found.classes[-1].reference == 0.0
    assert found.psi_class_mix > 0.25  # 9% of answers a class it was never validated on


# --- the workers' check -----------------------------------------------------------------------

def test_the_check_records_one_event_a_window_and_tells_the_webhook(model, db, store, env,
                                                                    monkeypatch,
                                                                    no_events) -> None:
    from worker import watch

    add_answers(db, 3, SHIFTED)
    add_answers(db, 2, SHIFTED)  # no reference: never an alert
    with webhook_receiver() as receiver:
        monkeypatch.setenv("WEBHOOK_URL", receiver.url)
        monkeypatch.setenv("WEBHOOK_SECRET", "drift-test-secret-5b1c0e9d7a3f")
        conns = Connections.from_settings(get_settings())
        try:
            assert ("drift", 300, drift.check) in watch.checks(conns)
            first = drift.check(conns)
            again = drift.check(conns)
        finally:
            conns.close()
    assert [d.version for d in first] == [3] and again == []
    [event] = drift_events(env["DATABASE_URL"])
    assert (event.version, event.actor) == (3, "automatic")
    assert "version 3 drifted" in event.message and "retrain" in event.message
    assert event.details["alert"] is True and event.details["predictions"] == 120
    jobs = Queue("predictions", connection=Redis.from_url(env["REDIS_URL"])).get_jobs()
    assert [j.args[0] for j in jobs] == ["drift.alert"]
    assert json.loads(jobs[0].args[1])["data"]["version"] == 3


def test_the_check_alerts_nothing_when_nothing_drifts(model, db, store, env, no_events) -> None:
    add_answers(db, 3, ALIKE)
    conns = Connections.from_settings(get_settings())
    try:
        assert drift.check(conns) == []
    finally:
        conns.close()
    assert drift_events(env["DATABASE_URL"]) == []


# --- the back office ------------------------------------------------------------------------

def test_the_statistics_page_shows_each_versions_drift_and_the_banner(model, db, store,
                                                                      admin_client) -> None:
    add_answers(db, 3, SHIFTED)
    add_answers(db, 2, {("circle", 0.9): 4})
    page = admin_client.get("/admin/stats")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'id="drift-alert"' in html and "version 3's answers" in html
    assert 'id="drift-3"' in html and 'id="drift-2"' in html and "no reference" in html
    found = measured(db)
    assert f"{found.psi_class_mix:.3f}" in html and f"{found.psi_confidence:.3f}" in html
    answer = admin_client.get("/admin/api/stats")
    assert answer.status_code == 200
    listed = {d["version"]: d for d in answer.get_json()["drift"]}
    assert listed[3]["alert"] is True and listed[3]["predictions"] == 120
    assert listed[2]["reference_images"] is None and listed[2]["alert"] is False


def test_the_statistics_page_has_no_banner_without_drift(model, db, store, admin_client) -> None:
    add_answers(db, 3, ALIKE)
    html = admin_client.get("/admin/stats").get_data(as_text=True)
    assert 'id="drift-alert"' not in html and 'id="drift-3"' in html
    assert "stable" in html
