"""The retention purge: uploads past RETENTION_DAYS go with their images and
thumbnails, reviewed ones stay unless asked, a photo a young upload shares
stays, a run that learnt from a purged photo has it noted in its manifest, and
a real long-running worker purges by itself, one worker at a time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from redis import Redis
from sqlalchemy import event, select

from core import deletion
from core.db import Batch, Prediction, utcnow
from core.lifecycle.connections import Connections
from core.settings import ROOT, get_settings
from frontend.thumbnails import thumbnail
from tests.factories import (
    add_batch,
    add_prediction,
    days_ago,
    image_bytes,
    run_manifest,
    stored_prediction,
    wait_until,
)
from worker import retention


def conns() -> Connections:
    return Connections.from_settings(get_settings())


def purge(**kwargs):
    opened = conns()
    try:
        return retention.purge(opened, **kwargs)
    finally:
        opened.close()


def sha_of(db, prediction_id: str) -> str:
    return stored_prediction(db, prediction_id).image_sha256


def purge_command(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "worker", "purge", *args], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_the_purge_deletes_old_uploads_with_their_images_and_thumbnails(db, store):
    old = add_prediction(db, store, 1, created_at=days_ago(31))
    young = add_prediction(db, store, 2, created_at=days_ago(29))
    old_sha, young_sha = sha_of(db, old), sha_of(db, young)
    for sha in (old_sha, young_sha):
        thumbnail(store, sha, "jpg")

    counts = purge()

    assert counts["records"] == 1 and counts["images"] == 1 and counts["thumbnails"] == 1
    assert stored_prediction(db, old) is None
    assert not store.path(old_sha, "jpg").exists()
    assert not store.thumbnail_path(old_sha).exists()
    assert stored_prediction(db, young) is not None
    assert store.path(young_sha, "jpg").exists() and store.thumbnail_path(young_sha).exists()


def test_reviewed_uploads_are_kept_unless_retention_keep_reviewed_is_false(
        db, store, monkeypatch):
    reviewed = add_prediction(db, store, 3, created_at=days_ago(90), correct=True,
                              true_label="apple", reviewed_at=days_ago(80), reviewed_by="admin")
    plain = add_prediction(db, store, 4, created_at=days_ago(90))
    assert purge()["records"] == 1
    assert stored_prediction(db, plain) is None
    assert stored_prediction(db, reviewed) is not None
    assert store.path(sha_of(db, reviewed), "jpg").exists()

    monkeypatch.setenv("RETENTION_KEEP_REVIEWED", "false")
    sha = sha_of(db, reviewed)
    assert purge()["records"] == 1
    assert stored_prediction(db, reviewed) is None and not store.path(sha, "jpg").exists()


def test_a_photo_a_young_upload_shares_is_kept(db, store):
    photo = image_bytes(5)
    old = add_prediction(db, store, image=photo, created_at=days_ago(45))
    young = add_prediction(db, store, image=photo, created_at=days_ago(1))
    sha = sha_of(db, old)
    thumbnail(store, sha, "jpg")

    counts = purge()

    assert counts["records"] == 1 and counts["images"] == 0 and counts["thumbnails"] == 0
    assert stored_prediction(db, old) is None and stored_prediction(db, young) is not None
    assert store.path(sha, "jpg").read_bytes() == photo
    assert store.thumbnail_path(sha).exists()


def test_a_purged_photo_a_run_learnt_from_is_noted_in_that_runs_manifest(
        db, store, env, monkeypatch):
    monkeypatch.setenv("RETENTION_KEEP_REVIEWED", "false")
    learnt = add_prediction(db, store, 6, created_at=days_ago(60), true_label="apple",
                            correct=True, reviewed_at=days_ago(59), reviewed_by="admin")
    sha = sha_of(db, learnt)
    model = Path(env["MODEL_BASE_PATH"]) / "classifier"
    used = run_manifest(model, 2, [sha, "a" * 64])
    other = run_manifest(model, 3, ["b" * 64])
    other_before = other.read_text()
    before = json.loads(used.read_text())

    counts = purge()

    assert counts["manifests"] == 1
    after = json.loads(used.read_text())
    assert after["base"] == before["base"] and after["reviewed"] == before["reviewed"]
    [note] = after["deleted"]
    assert note["sha256"] == sha and note["reason"] == "retention"
    assert note["deleted_at"].startswith(utcnow().date().isoformat())
    assert other.read_text() == other_before
    assert sorted(p.name for p in used.parent.iterdir()) == ["manifest.json"]  # no temp files
    # Noted once: a second deletion of the same photo adds nothing.
    assert deletion.note_in_manifests(model, [sha], reason="retention") == 0


def test_a_backlog_is_purged_in_bounded_chunks(db, store, monkeypatch):
    monkeypatch.setattr(deletion, "CHUNK", 3)
    ids = [add_prediction(db, store, 10 + i, created_at=days_ago(40 + i)) for i in range(8)]
    opened = conns()
    statements: list[str] = []

    @event.listens_for(opened.db.engine, "before_cursor_execute")
    def seen(_conn, _cursor, statement, *_args):
        if statement.lstrip().upper().startswith("DELETE FROM PREDICTIONS"):
            statements.append(statement)

    try:
        assert retention.purge(opened)["records"] == 8
    finally:
        opened.close()
    assert len(statements) == 3  # 3 + 3 + 2 records, each chunk its own transaction
    assert all(stored_prediction(db, i) is None for i in ids)


def test_a_batch_keeps_its_totals_and_goes_with_its_last_record(client, db, store):
    partly, [old, _, young] = add_batch(db, store, [40, 35, 2])
    wholly, _ = add_batch(db, store, [50, 45], seed=800)

    assert purge()["batches"] == 1

    with db.session() as s:
        assert s.get(Batch, wholly) is None
        assert s.get(Batch, partly).total == 1
        assert list(s.scalars(select(Prediction.id).where(Prediction.batch_id == partly))) == [
            young]
    summary = client.get(f"/api/batches/{partly}").get_json()
    assert (summary["total"], summary["finished"], summary["complete"]) == (1, 1, True)
    assert client.get(f"/batches/{partly}").status_code == 200
    assert client.get(f"/api/batches/{wholly}").status_code == 404
    assert client.get(f"/p/{old}").status_code == 404


def test_retention_days_zero_keeps_everything(db, store, monkeypatch):
    monkeypatch.setenv("RETENTION_DAYS", "0")
    ancient = add_prediction(db, store, 20, created_at=days_ago(3650))
    assert purge()["records"] == 0
    assert "retention is off" in purge_command().stdout
    assert stored_prediction(db, ancient) is not None


def test_a_bad_retention_setting_is_refused_with_its_name(env, monkeypatch):
    from core.settings import SettingsError

    for name, value in [("RETENTION_DAYS", "-1"), ("RETENTION_DAYS", "a month"),
                        ("RETENTION_KEEP_REVIEWED", "perhaps"), ("RETENTION_INTERVAL", "0")]:
        monkeypatch.setenv(name, value)
        with pytest.raises(SettingsError, match=name):
            get_settings()
        monkeypatch.delenv(name)
    bad = subprocess.run([sys.executable, "-m", "worker", "purge"], cwd=ROOT, timeout=60,
                         capture_output=True, text=True,
                         env={**os.environ, "RETENTION_DAYS": "soon"})
    assert bad.returncode == 2 and "RETENTION_DAYS must be a whole number" in bad.stderr


def test_the_purge_command_dry_run_counts_and_deletes_nothing(db, store):
    old = add_prediction(db, store, 21, created_at=days_ago(31))
    dry = purge_command("--dry-run")
    assert "'would_delete': 1" in dry.stdout
    assert stored_prediction(db, old) is not None
    real = purge_command()
    assert "'records': 1" in real.stdout and "'images': 1" in real.stdout
    assert stored_prediction(db, old) is None


def test_only_one_purge_runs_at_a_time(db, store, redis_url):
    old = add_prediction(db, store, 22, created_at=days_ago(31))
    held = Redis.from_url(redis_url).lock(retention.LOCK_KEY, timeout=60)
    assert held.acquire(blocking=False)
    try:
        assert purge() is None
        assert "another purge is running" in purge_command().stdout
        assert stored_prediction(db, old) is not None
    finally:
        held.release()
    assert purge()["records"] == 1


def test_a_long_running_worker_purges_by_itself(request, db, store, env, monkeypatch):
    monkeypatch.setenv("RETENTION_INTERVAL", "1")
    old = add_prediction(db, store, 23, created_at=days_ago(31))
    young = add_prediction(db, store, 24)
    sha = sha_of(db, old)
    worker = request.getfixturevalue("worker_process")
    wait_until(lambda: stored_prediction(db, old) is None, 60, "the worker's purge",
               interval=0.2)
    assert not store.path(sha, "jpg").exists()
    assert worker.poll() is None
    # Purged again an interval later: a record that grew old since goes too.
    with db.session() as s:
        s.get(Prediction, young).created_at = days_ago(31)
    wait_until(lambda: stored_prediction(db, young) is None, 60, "the next purge",
               interval=0.2)
    assert worker.poll() is None
