"""Per-version monitoring over a window: the figures the models and statistics
pages show, from records written straight to the database."""

from __future__ import annotations

from datetime import timedelta

import pytest

from core.db import utcnow
from tests.factories import add_prediction


def add_answers(db, store, version: int, role: str, seconds: list[float], *, label="apple",
                confidence=0.9, age=timedelta(minutes=5), **fields) -> None:
    created = utcnow() - age
    for i, took in enumerate(seconds):
        add_prediction(db, store, version * 1000 + i, model_version=version, model_role=role,
                       label=label, confidence=confidence, created_at=created,
                       finished_at=created + timedelta(seconds=took), **fields)


def test_the_statistics_api_gives_each_version_and_role_over_the_window(admin_client, db,
                                                                         store):
    add_answers(db, store, 1, "stable", [0.1 * i for i in range(1, 101)])
    add_answers(db, store, 2, "canary", [1.0, 2.0], label="pear", confidence=0.5,
                correct=False, true_label="apple")
    add_answers(db, store, 1, "stable", [9.0], age=timedelta(days=3))  # outside 24 h
    add_prediction(db, store, 5000, model_version=2, model_role="canary", status="failed",
                   error="the model could not read this image")
    versions = admin_client.get("/admin/api/stats").json["versions"]
    by_side = {(v["version"], v["role"]): v for v in versions}
    stable, canary = by_side[(1, "stable")], by_side[(2, "canary")]
    assert stable["predictions"] == 100 and stable["failures"] == 0
    assert stable["latency_p50_s"] == pytest.approx(5.0)
    assert stable["latency_p99_s"] == pytest.approx(9.9)
    assert stable["class_mix"] == {"apple": 1.0} and stable["unsure_share"] == 0.0
    assert (canary["predictions"], canary["failures"]) == (3, 1)
    assert canary["failure_rate"] == pytest.approx(1 / 3)
    assert canary["unsure_share"] == 1.0  # 0.5 is under UNCERTAIN_BELOW (0.7)
    assert (canary["reviewed"], canary["accuracy"]) == (2, 0.0)
    week = admin_client.get("/admin/api/stats?window=7d").json["versions"]
    assert {(v["version"], v["role"]): v["predictions"] for v in week}[(1, "stable")] == 101


def test_the_pages_show_the_window_they_were_asked_for(admin_client, db, store):
    add_answers(db, store, 4, "newest", [0.5])
    for page in ("/admin/stats", "/admin/models"):
        html = admin_client.get(f"{page}?window=1h").get_data(as_text=True)
        assert "Per version over the last 1h" in html and "<td>newest</td>" in html


@pytest.mark.parametrize("page", ["/admin/stats", "/admin/models", "/admin/api/stats"])
def test_a_window_the_pages_do_not_offer_is_refused(admin_client, page):
    response = admin_client.get(f"{page}?window=1y")
    assert response.status_code == 400
    assert "window must be one of 1h, 24h, 7d, 30d" in response.get_data(as_text=True)
