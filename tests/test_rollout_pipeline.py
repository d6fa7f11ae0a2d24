"""Roll-outs end to end: the admin API sets the state, real workers route real
uploads to two versions loaded at once in the embedded Serving, the shadow's
answers are stored and never shown, and a worse canary is rolled back once
reviewed records show it behind.

Version 1 is the trained shapes model, version 2 a deliberately worse one (it
says "circle" to everything), version 3 a copy of version 1.
"""

from __future__ import annotations

import pytest

from core.db import Prediction
from core.rollout import store as rollout_store
from core.rollout.records import RolloutEvent
from core.rollout.state import Mode, Role, State, route
from tests.factories import (
    SHAPES,
    bearer,
    new_token,
    part,
    photo_bytes,
    session,
    wait_until,
)
from tests.web_fixtures import run_worker

WORSE = 2  # rollout_versions (tests/web_fixtures.py): says "circle" to everything


@pytest.fixture
def token(runner, admin_user) -> dict[str, str]:
    return bearer(new_token(runner))


def put(client, token, **state):
    body = {"mode": "pinned", "stable": 1, "canary": None, "canary_share": 0,
            "shadow": None} | state
    response = client.put("/admin/api/rollout", json=body, headers=token)
    assert response.status_code == 200, response.json
    return response


def logged_in(request):
    """The test's client, logged in to the back office: its later POSTs and PUTs need
    the page's CSRF token, even with a bearer token, so this comes last."""
    return request.getfixturevalue("admin_client")


def upload(client, per_kind: int, seed: int = 0) -> list[dict]:
    """A batch of shapes of known kinds, classified by a burst worker; its records."""
    files = [part(photo_bytes(kind, seed + i), f"{kind}-{seed + i}.png")
             for i in range(per_kind) for kind in SHAPES]
    batch = client.post("/api/batches", data={"images": files}).json
    run_worker()
    return client.get(f"{batch['url']}/predictions").json["predictions"]


def test_the_state_starts_newest_and_changes_only_to_loaded_versions(rollout_serving, client,
                                                                     token):
    assert client.get("/admin/api/rollout", headers=token).json == State().as_json()
    missing = client.put("/admin/api/rollout", headers=token, json={
        "mode": "pinned", "stable": 1, "canary": 7, "canary_share": 0.1, "shadow": None})
    assert missing.status_code == 409
    assert "version 7 is not AVAILABLE" in missing.json["error"]
    bad = client.put("/admin/api/rollout", headers=token, json={
        "mode": "pinned", "stable": 1, "canary": 2, "canary_share": 0.9, "shadow": None})
    assert bad.status_code == 400 and "canary_share" in bad.json["error"]
    assert client.put("/admin/api/rollout", data="mode=pinned", headers=token).status_code == 400
    assert client.get("/admin/api/rollout", headers=token).json["mode"] == "newest"
    changed = put(client, token, canary=2, canary_share=0.25, shadow=3)
    assert changed.status_code == 200
    assert changed.json == {"mode": "pinned", "stable": 1, "canary": 2, "canary_share": 0.25,
                            "shadow": 3}
    assert client.get("/admin/api/rollout", headers=token).json == changed.json
    assert client.get("/admin/api/rollout").status_code == 401


def test_each_record_is_answered_by_the_side_its_id_hashes_to(rollout_serving, client, token, env):
    put(client, token, canary=WORSE, canary_share=0.5)
    state = State(Mode.PINNED, 1, WORSE, 0.5)
    records = upload(client, 6)
    assert {r["status"] for r in records} == {"done"}
    for r in records:
        version, role = route(state, r["id"], 3)
        assert (r["model_version"], r["model_role"]) == (version, str(role))
        if role is Role.CANARY:
            assert r["label"] == "circle" and r["confidence"] == pytest.approx(1.0)
    assert {r["model_role"] for r in records} == {"stable", "canary"}


def test_newest_mode_names_the_newest_version(rollout_serving, client):
    records = upload(client, 1)
    assert {(r["model_version"], r["model_role"]) for r in records} == {(3, "newest")}


def test_the_shadow_answers_beside_stable_and_is_never_shown(rollout_serving, client, token, env,
                                                                monkeypatch, request):
    monkeypatch.setenv("SHADOW_SHARE", "1")
    put(client, token, shadow=3)
    records = upload(client, 3)
    with session(env["DATABASE_URL"]) as db:
        rows = [db.get(Prediction, r["id"]) for r in records]
    assert {(row.model_version, row.model_role, row.shadow_version) for row in rows} == {
        (1, "stable", 3)}
    assert all(row.shadow_label == row.label for row in rows)  # version 3 is version 1
    assert not any("shadow" in key for r in records for key in r)
    page = logged_in(request).get("/admin/models").get_data(as_text=True)
    assert 'id="shadow-agreement"' in page and "100.0%" in page


def test_a_canary_that_is_not_loaded_gives_its_records_to_stable(rollout_serving, client, env):
    with session(env["DATABASE_URL"]) as db:
        rollout_store.save(db, State(Mode.PINNED, 1, 99, 0.5), by="test",
                           seen=rollout_store.load(db))
    records = upload(client, 2)
    assert {(r["model_version"], r["model_role"]) for r in records} == {(1, "stable")}


def test_a_stable_that_is_not_loaded_holds_records_back_instead_of_answering(
        rollout_serving, client, env):
    with session(env["DATABASE_URL"]) as db:
        rollout_store.save(db, State(Mode.PINNED, 99), by="test", seen=rollout_store.load(db))
    records = upload(client, 1)
    assert {r["status"] for r in records} == {"failed"}  # JOB_RETRIES=0 in these tests
    assert all("stable version 99 is not loaded" in r["error"] for r in records)


def test_a_worse_canary_is_rolled_back_once_reviews_show_it_behind(
        rollout_serving, client, token, env, monkeypatch, request):
    put(client, token, canary=WORSE, canary_share=0.5)
    records = upload(client, 10)
    for r in records:
        truth = r["filename"].split("-")[0]
        reviewed = client.post(f"/admin/api/predictions/{r['id']}/review",
                               json={"label": truth}, headers=token)
        assert reviewed.status_code == 200, reviewed.json
    canary = [r for r in records if r["model_role"] == "canary"]
    assert len(canary) >= 10
    monkeypatch.setenv("ROLLOUT_CHECK_INTERVAL", "1")
    monkeypatch.setenv("ROLLBACK_MIN_REVIEWED", "10")
    worker = request.getfixturevalue("worker_process")  # it runs the guard
    wait_until(lambda: client.get("/admin/api/rollout", headers=token).json["canary"] is None,
               60, "the guard's rollback")
    assert worker.poll() is None
    state = client.get("/admin/api/rollout", headers=token).json
    assert state == {"mode": "pinned", "stable": 1, "canary": None, "canary_share": 0.0,
                     "shadow": None}
    with session(env["DATABASE_URL"]) as db:
        events = [e for e in db.query(RolloutEvent).all() if e.kind == "rollback"]
    assert len(events) == 1 and events[0].version == WORSE
    assert events[0].details["answered"] == len(canary)
    assert "reviewed records" in events[0].message
    page = logged_in(request).get("/admin/models").get_data(as_text=True)
    assert "event-rollback" in page and f"version {WORSE} rolled back" in page


def canary_since_now(env, state: State) -> None:
    with session(env["DATABASE_URL"]) as db:
        rollout_store.save(db, state, by="test", seen=rollout_store.load(db))


def test_a_canary_failing_more_often_than_stable_is_rolled_back(rollout_serving, env, db, store,
                                                               monkeypatch):
    """The guard's other ground: failures, judged on enough predictions only."""
    from core.lifecycle.connections import Connections
    from core.rollout import guard
    from core.settings import get_settings
    from tests.factories import add_prediction

    monkeypatch.setenv("ROLLBACK_MIN_PREDICTIONS", "20")
    canary_since_now(env, State(Mode.PINNED, 1, WORSE, 0.5))
    conns = Connections.from_settings(get_settings())
    for seed in range(19):
        add_prediction(db, store, seed, model_version=WORSE, model_role="canary",
                       status="failed", error="the model server refused it")
        add_prediction(db, store, 100 + seed, model_version=1, model_role="stable")
    assert guard.check(conns) is None  # 19 predictions: not enough evidence yet
    add_prediction(db, store, 99, model_version=WORSE, model_role="canary", status="failed",
                   error="the model server refused it")
    message = guard.check(conns)
    assert message and "failed 100.0% of 20 predictions" in message
    with session(env["DATABASE_URL"]) as opened:
        assert rollout_store.load(opened).state == State(Mode.PINNED, 1)
    conns.close()


def test_a_canary_no_worse_than_stable_keeps_its_share(rollout_serving, env, db, store):
    from core.lifecycle.connections import Connections
    from core.rollout import guard
    from core.settings import get_settings
    from tests.factories import add_prediction

    canary_since_now(env, State(Mode.PINNED, 1, 3, 0.5))
    for seed in range(60):
        version, role = (3, "canary") if seed % 2 else (1, "stable")
        add_prediction(db, store, seed, model_version=version, model_role=role,
                       correct=seed % 10 != 0, true_label="apple")
    conns = Connections.from_settings(get_settings())
    assert guard.check(conns) is None
    with session(env["DATABASE_URL"]) as opened:
        assert rollout_store.load(opened).state.canary == 3
    conns.close()


def test_with_automatic_canaries_a_version_passing_the_gate_becomes_the_canary_once(
        rollout_serving, client, token, env, db):
    from core.lifecycle.connections import Connections
    from core.rollout import guard
    from core.settings import get_settings
    from tests.factories import add_training_run

    put(client, token)
    assert client.put("/admin/api/rollout/auto-canary", json={"enabled": "yes"},
                      headers=token).status_code == 400
    assert client.put("/admin/api/rollout/auto-canary", json={"enabled": True},
                      headers=token).json == {"auto_canary": True}
    add_training_run(db, status="promoted", version=3)
    conns = Connections.from_settings(get_settings())
    assert "version 3 passed the training gate" in guard.check(conns)
    assert client.get("/admin/api/rollout", headers=token).json == {
        "mode": "pinned", "stable": 1, "canary": 3, "canary_share": 0.1, "shadow": None}
    put(client, token)  # an administrator stops it: it is not made the canary again
    assert guard.check(conns) is None
    assert client.get("/admin/api/rollout", headers=token).json["canary"] is None
    conns.close()
