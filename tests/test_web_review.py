"""The improvement loop's review side: API tokens for scripts, the review API
and its queue page, the confusion matrix, and unsure answers.

Records are written straight into the database (tests/factories.py), so no
model, Serving or worker is needed; Redis and both databases are real.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from core.db import ApiToken, Status
from core.serving_client import Prediction as Answer
from tests.factories import (
    add_prediction,
    bearer,
    model_version_files,
    new_token,
    stored_prediction,
)

NOON = datetime(2026, 4, 1, 12, 0)


def top(*pairs: tuple[str, float]) -> list[dict]:
    return [{"label": label, "score": score} for label, score in pairs]


def answered(db, store, seed: int, label: str = "apple", confidence: float = 0.9,
             margin: float | None = None, minutes: int = 0, **fields) -> str:
    """A done record whose top_k holds apple, pear and plum."""
    others = [name for name in ("apple", "pear", "plum") if name != label]
    rest = round(1 - confidence, 6)
    return add_prediction(db, store, seed, label=label, confidence=confidence,
                          margin=margin if margin is not None else confidence - rest / 2,
                          top_k=top((label, confidence), (others[0], rest / 2),
                                    (others[1], rest / 2)),
                          created_at=NOON + timedelta(minutes=minutes),
                          finished_at=NOON + timedelta(minutes=minutes, seconds=1), **fields)


def send_review(client, prediction_id: str, label, **kwargs):
    return client.post(f"/admin/api/predictions/{prediction_id}/review", json={"label": label},
                       **kwargs)


def page_csrf(client) -> dict[str, str]:
    """The X-CSRFToken header the admin pages' scripts send."""
    html = client.get("/admin/review").get_data(as_text=True)
    return {"X-CSRFToken": re.search(r'name="csrf-token" content="([^"]+)"', html).group(1)}


# --- API tokens -----------------------------------------------------------------------------


def test_create_token_prints_a_token_on_its_last_line_and_stores_only_its_hash(
        runner, admin_user, client, db):
    token = new_token(runner)
    assert re.fullmatch(r"[A-Za-z0-9_-]{40,}", token), token
    with db.session() as session:
        stored = session.scalars(select(ApiToken)).all()
    assert [t.token_sha256 for t in stored] == [hashlib.sha256(token.encode()).hexdigest()]
    assert stored[0].last_used_at is None
    response = client.get("/admin/api/records", headers=bearer(token))
    assert response.status_code == 200, response.json
    with db.session() as session:
        assert session.scalar(select(ApiToken)).last_used_at is not None


def test_create_token_for_an_unknown_administrator_fails_clearly(runner, admin_user, db):
    result = runner.invoke(args=["create-token", "nobody"])
    assert result.exit_code == 2
    assert "there is no administrator 'nobody'" in result.output
    with db.session() as session:
        assert session.scalars(select(ApiToken)).all() == []


def test_revoked_and_unknown_tokens_answer_401_json(runner, admin_user, client):
    first, second = new_token(runner), new_token(runner)
    assert client.get("/admin/api/stats", headers=bearer(second)).status_code == 200
    revoked = runner.invoke(args=["create-token", "admin", "--revoke"])
    assert revoked.exit_code == 0, revoked.output
    assert "2 tokens of admin revoked" in revoked.output
    for token in (first, second, "not-a-token", ""):
        response = client.get("/admin/api/stats", headers=bearer(token))
        assert response.status_code == 401, token
        assert response.is_json and "error" in response.json
    assert "unknown or revoked" in client.get("/admin/api/stats",
                                              headers=bearer(first)).json["error"]
    assert client.get("/admin/api/stats",
                      headers={"Authorization": "Basic YWRtaW46eA=="}).status_code == 401
    again = runner.invoke(args=["create-token", "admin", "--revoke"])
    assert "0 tokens of admin revoked" in again.output


def test_a_token_opens_only_the_json_api_not_the_pages(runner, admin_user, client):
    token = new_token(runner)
    page = client.get("/admin/stats", headers=bearer(token))
    assert page.status_code == 302 and "/admin/login" in page.headers["Location"]


def test_a_token_posts_without_a_csrf_token(runner, admin_user, client, db, store):
    token = new_token(runner)
    pid = answered(db, store, 1)
    response = send_review(client, pid, "pear", headers=bearer(token))
    assert response.status_code == 200, response.json
    assert (response.json["correct"], response.json["true_label"]) == (False, "pear")
    assert stored_prediction(db, pid).reviewed_by == "admin"


def test_a_session_post_to_the_admin_api_needs_the_pages_csrf_header(admin_client, db, store):
    pid = answered(db, store, 1)
    without = send_review(admin_client, pid, "apple")
    assert without.status_code == 400
    assert "CSRF" in without.json["error"] or "reload the page" in without.json["error"]
    forged = send_review(admin_client, pid, "apple", headers={"X-CSRFToken": "forged"})
    assert forged.status_code == 400
    assert stored_prediction(db, pid).reviewed_at is None
    response = send_review(admin_client, pid, "apple", headers=page_csrf(admin_client))
    assert response.status_code == 200, response.json
    assert stored_prediction(db, pid).correct is True


def test_an_anonymous_review_through_the_api_is_refused(client, db, store):
    pid = answered(db, store, 1)
    response = send_review(client, pid, "apple")
    assert response.status_code == 401 and response.is_json
    assert stored_prediction(db, pid).reviewed_at is None


# --- The review API -------------------------------------------------------------------------


@pytest.fixture
def api(runner, admin_user, client):
    """A client whose requests carry an administrator's bearer token."""
    token = new_token(runner)

    class TokenClient:
        def post(self, path, **kwargs):
            return client.post(path, headers=bearer(token), **kwargs)

        def get(self, path, **kwargs):
            return client.get(path, headers=bearer(token), **kwargs)

    return TokenClient()


def test_reviewing_with_the_predicted_label_marks_it_right(api, db, store):
    pid = answered(db, store, 1, label="pear")
    response = send_review(api, pid, "pear")
    assert response.status_code == 200
    body = response.json
    assert (body["id"], body["label"], body["correct"], body["true_label"]) == (
        pid, "pear", True, "pear")
    assert body["reviewed_by"] == "admin" and body["reviewed_at"].endswith("Z")
    p = stored_prediction(db, pid)
    assert (p.correct, p.true_label, p.reviewed_by) == (True, "pear", "admin")


def test_reviewing_with_another_class_marks_it_wrong_with_that_truth(api, db, store):
    pid = answered(db, store, 1, label="apple")
    assert send_review(api, pid, "plum").status_code == 200
    p = stored_prediction(db, pid)
    assert (p.correct, p.true_label, p.label) == (False, "plum", "apple")
    assert send_review(api, pid, "apple").status_code == 200  # a second opinion replaces it
    assert stored_prediction(db, pid).correct is True


def test_a_class_only_the_versions_report_names_is_accepted(api, db, store, env):
    model = Path(env["MODEL_BASE_PATH"]) / env["MODEL_NAME"]
    model_version_files(model, 1, metrics={"class_names": ["apple", "kiwi", "pear", "plum"]})
    pid = answered(db, store, 1)
    assert send_review(api, pid, "kiwi").status_code == 200
    assert stored_prediction(db, pid).true_label == "kiwi"


@pytest.mark.parametrize("label", ["banana", "", "  ", None, 3, ["apple"], "x" * 5000])
def test_a_label_that_is_not_a_class_answers_400_and_stores_nothing(api, db, store, label):
    pid = answered(db, store, 1)
    response = send_review(api, pid, label)
    assert response.status_code == 400
    assert response.json["error"]
    assert stored_prediction(db, pid).reviewed_at is None


def test_the_unknown_class_message_lists_the_classes(api, db, store):
    pid = answered(db, store, 1)
    error = send_review(api, pid, "banana").json["error"]
    assert "unknown class 'banana'" in error and "apple, pear, plum" in error


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b'"apple"', b"{}", b""])
def test_a_malformed_review_body_answers_400(api, db, store, body):
    pid = answered(db, store, 1)
    response = api.post(f"/admin/api/predictions/{pid}/review", data=body,
                        content_type="application/json")
    assert response.status_code == 400
    assert "label" in response.json["error"]
    assert stored_prediction(db, pid).reviewed_at is None


def test_a_review_sent_as_a_form_answers_400(api, db, store):
    pid = answered(db, store, 1)
    response = api.post(f"/admin/api/predictions/{pid}/review", data={"label": "apple"})
    assert response.status_code == 400
    assert stored_prediction(db, pid).reviewed_at is None


def test_reviewing_an_unknown_record_answers_404(api):
    response = send_review(api, "nosuchrecord", "apple")
    assert response.status_code == 404 and "nosuchrecord" in response.json["error"]


@pytest.mark.parametrize("status", [Status.FAILED, Status.QUEUED, Status.RUNNING])
def test_only_answered_records_can_be_reviewed(api, db, store, status):
    pid = add_prediction(db, store, 1, status=status)
    response = send_review(api, pid, "apple")
    assert response.status_code == 409
    assert "only answered records can be reviewed" in response.json["error"]
    assert stored_prediction(db, pid).reviewed_at is None


# --- The review queue -----------------------------------------------------------------------


def test_the_queue_puts_unsure_records_first_least_sure_first_then_the_newest(api, db, store):
    ids = {
        "sure-old": answered(db, store, 1, confidence=0.95, minutes=0),
        "sure-new": answered(db, store, 2, confidence=0.97, minutes=9),
        "low": answered(db, store, 3, confidence=0.40, minutes=1),
        "lowest": answered(db, store, 4, confidence=0.35, minutes=2),
        "close": answered(db, store, 5, confidence=0.75, margin=0.1, minutes=3),
        "reviewed": answered(db, store, 6, confidence=0.2, correct=True, true_label="apple",
                             reviewed_at=NOON, reviewed_by="someone"),
    }
    add_prediction(db, store, 7, status=Status.FAILED)
    add_prediction(db, store, 8, status=Status.QUEUED)
    names = {pid: name for name, pid in ids.items()}
    body = api.get("/admin/api/review-queue").json
    assert [names[r["id"]] for r in body["records"]] == [
        "lowest", "low", "close", "sure-new", "sure-old"]
    assert body["total"] == 5
    assert body["reviewed_per_class"] == {"apple": 1}
    first = body["records"][0]
    assert first["classes"] == ["apple", "pear", "plum"]
    assert first["image_url"] == f"/images/{ids['lowest']}"
    assert first["uncertain"] is True and body["records"][2]["uncertain"] is False
    everything = api.get("/admin/api/review-queue?reviewed=").json["records"]
    assert [names[r["id"]] for r in everything][0] == "reviewed"
    assert len(everything) == 6


def test_the_queue_takes_the_records_filters(api, db, store):
    pear = answered(db, store, 1, label="pear", confidence=0.5, source="api")
    answered(db, store, 2, label="apple", confidence=0.5)
    response = api.get("/admin/api/review-queue?label=pear")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert [r["id"] for r in response.json["records"]] == [pear]
    assert [r["id"] for r in api.get("/admin/api/review-queue?source=api").json["records"]] == [
        pear]
    bad = api.get("/admin/api/review-queue?reviewed=maybe")
    assert bad.status_code == 400 and "reviewed" in bad.json["error"]


def test_the_review_page_renders_with_its_keys_and_is_linked(admin_client, db, store):
    answered(db, store, 1)
    html = admin_client.get("/admin/").get_data(as_text=True)
    assert 'href="/admin/review"' in html
    page = admin_client.get("/admin/review?label=apple")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'id="reviewer"' in html and "review.js" in html
    assert 'data-queue="/admin/api/review-queue?label=apple&amp;reviewed=no"' in html
    assert '<meta name="csrf-token"' in html
    assert admin_client.get("/admin/review?below=2").status_code == 400
    assert admin_client.get("/static/review.js").status_code == 200


# --- Records: true label and unsure filters; the confusion matrix ---------------------------


def test_the_records_filter_by_true_label_and_unsure(admin_client, db, store):
    wrong = answered(db, store, 1, label="apple", confidence=0.9, correct=False,
                     true_label="pear", reviewed_at=NOON, reviewed_by="a")
    unsure = answered(db, store, 2, label="apple", confidence=0.4)

    def ids(query: str) -> set[str]:
        response = admin_client.get(f"/admin/api/records?{query}")
        assert response.status_code == 200, response.json
        return {r["id"] for r in response.json["records"]}

    assert ids("true_label=pear") == {wrong}
    assert ids("unsure=yes") == {unsure}
    assert ids("unsure=no") == {wrong}
    assert admin_client.get("/admin/api/records?unsure=maybe").status_code == 400
    html = admin_client.get("/admin/?true_label=pear").get_data(as_text=True)
    assert "1 match" in html


def test_the_confusion_matrix_counts_reviews_and_links_to_their_records(admin_client, db,
                                                                        store):
    reviewed = {"reviewed_at": NOON, "reviewed_by": "a"}
    for seed, (label, truth) in enumerate([("apple", "apple"), ("apple", "pear"),
                                           ("apple", "pear"), ("pear", "pear")]):
        answered(db, store, seed, label=label, correct=label == truth, true_label=truth,
                 **reviewed)
    answered(db, store, 9, label="plum")  # not reviewed: not counted
    confusion = admin_client.get("/admin/api/stats").json["confusion"]
    assert confusion == {"classes": ["apple", "pear"], "total": 4, "cells": {
        "apple": {"apple": 1, "pear": 2}, "pear": {"apple": 0, "pear": 1}}}
    html = admin_client.get("/admin/stats").get_data(as_text=True)
    link = "/admin/?label=apple&amp;true_label=pear&amp;reviewed=yes"
    assert f'href="{link}"' in html
    target = admin_client.get(link.replace("&amp;", "&")).get_data(as_text=True)
    assert "2 match" in target


# --- Unsure answers -------------------------------------------------------------------------


def test_an_unsure_answer_is_a_question_on_its_page_and_flagged_in_the_api(client, db, store):
    unsure = answered(db, store, 1, label="pear", confidence=0.45)
    sure = answered(db, store, 2, label="pear", confidence=0.9)
    html = client.get(f"/p/{unsure}").get_data(as_text=True)
    assert "Not sure: pear or apple?" in html
    assert "Not sure" not in client.get(f"/p/{sure}").get_data(as_text=True)
    assert client.get(f"/api/predictions/{unsure}").json["uncertain"] is True
    assert client.get(f"/api/predictions/{sure}").json["uncertain"] is False
    queued = add_prediction(db, store, 3, status=Status.QUEUED)
    assert "uncertain" not in client.get(f"/api/predictions/{queued}").json


def test_the_unsure_threshold_is_the_setting(client, db, store, monkeypatch, env):
    from frontend import create_app

    monkeypatch.setenv("UNCERTAIN_BELOW", "0.95")
    strict = create_app({"TESTING": True})
    try:
        pid = answered(db, store, 1, confidence=0.9)
        assert strict.test_client().get(f"/api/predictions/{pid}").json["uncertain"] is True
        assert client.get(f"/api/predictions/{pid}").json["uncertain"] is False
    finally:
        strict.extensions["classifier"].db.dispose()
        strict.extensions["classifier"].redis.close()


def test_the_openapi_document_describes_uncertain(client):
    schema = client.get("/api/openapi.json").json["components"]["schemas"]["Prediction"]
    assert schema["properties"]["uncertain"]["type"] == "boolean"


def test_the_worker_stores_the_gap_between_the_two_best_scores():
    from worker import tasks

    done = tasks._done(Answer("pear", 0.5, {"apple": 0.3, "pear": 0.5, "plum": 0.2}), 12.0)
    assert done["margin"] == pytest.approx(0.2)
    assert [t["label"] for t in done["top_k"]] == ["pear", "apple", "plum"]
    assert json.dumps(done["top_k"])  # stored as JSON
