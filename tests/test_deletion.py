"""Deleting uploads: a visitor their own (and nobody else's), an administrator any
record or batch from the pages and the API, images never kept by a cache, and the
deletion noted in a run's manifest. A worker meeting deleted records:
test_deletion_worker.py."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from sqlalchemy import select

from core.db import Batch, Prediction
from frontend import tokens
from tests.factories import (
    add_batch,
    add_prediction,
    database,
    part,
    photo_bytes,
    run_manifest,
    session,
    stored_prediction,
)
from tests.web_fixtures import ADMIN_NAME, csrf_token


def upload_page(client, *images: tuple[bytes, str]) -> str:
    """Uploads from the page, as this browser; returns where it redirected."""
    response = client.post("/upload", data={
        "csrf_token": csrf_token(client, "/"),
        "images": [part(data, name) for data, name in images], "archive": part(b"", "")})
    assert response.status_code == 303, response.get_data(as_text=True)
    return response.headers["Location"]


def uploaded_id(location: str) -> str:
    return location.rstrip("/").rsplit("/", 1)[-1]


def urls(prediction_id: str) -> list[str]:
    return [f"/p/{prediction_id}", f"/images/{prediction_id}",
            f"/images/{prediction_id}/thumbnail", f"/api/predictions/{prediction_id}"]


def files_of(env, prediction_id: str) -> tuple[Path, Path]:
    from core.storage import ImageStore

    p = stored_prediction(env["DATABASE_URL"], prediction_id)
    store = ImageStore(Path(env["UPLOAD_DIR"]))
    return store.path(p.image_sha256, p.image_format), store.thumbnail_path(p.image_sha256)


def delete_form_token(client, page: str) -> str:
    text = client.get(page).get_data(as_text=True)
    match = re.search(r'id="delete"[^>]*>\s*<input[^>]*name="csrf_token"[^>]*value="([^"]+)"',
                      text)
    assert match, f"no delete form on {page}"
    return match.group(1)


@pytest.fixture
def bearer(env, admin_user) -> dict[str, str]:
    with session(env["DATABASE_URL"]) as opened:
        token = tokens.create(opened, ADMIN_NAME)
    return {"Authorization": f"Bearer {token}"}


# --- a visitor's own uploads -----------------------------------------------------------------

def test_a_visitor_deletes_their_upload_and_it_is_gone_everywhere(client, env):
    prediction_id = uploaded_id(upload_page(client, (photo_bytes("circle", 1), "mine.jpg")))
    for url in urls(prediction_id):
        assert client.get(url).status_code == 200, url  # the thumbnail is made here
    image, small = files_of(env, prediction_id)
    assert image.exists() and small.exists()
    assert "mine.jpg" in client.get("/history").get_data(as_text=True)

    token = delete_form_token(client, f"/p/{prediction_id}")
    response = client.post(f"/p/{prediction_id}/delete", data={"csrf_token": token},
                           follow_redirects=True)

    assert response.request.path == "/history" and response.history[0].status_code == 303
    history = response.get_data(as_text=True)
    assert "mine.jpg" not in history and "Deleted: the image and its result are gone" in history
    for url in urls(prediction_id):
        assert client.get(url).status_code == 404, url
    assert not image.exists() and not small.exists()
    again = client.post(f"/p/{prediction_id}/delete", data={"csrf_token": token})
    assert again.status_code == 404


def test_the_history_page_deletes_with_a_form_and_no_inline_script(client, env):
    prediction_id = uploaded_id(upload_page(client, (photo_bytes("square", 2), "row.jpg")))
    page = client.get("/history").get_data(as_text=True)
    form = re.search(rf'<form[^>]*action="/p/{prediction_id}/delete"[^>]*>(.*?)</form>', page,
                     re.S)
    assert form and 'name="csrf_token"' in form.group(1)
    assert "onsubmit" not in page and "onclick" not in page
    assert re.findall(r"<script(?![^>]*\bsrc=)", page) == []  # scripts come from files only
    assert 'src="/static/confirm.js"' in page
    token = re.search(r'value="([^"]+)"', form.group(1)).group(1)
    assert client.post(f"/p/{prediction_id}/delete", data={"csrf_token": token}).status_code == 303
    assert stored_prediction(env["DATABASE_URL"], prediction_id) is None


def test_another_browser_cannot_delete_an_upload_and_learns_nothing(client, app, env):
    prediction_id = uploaded_id(upload_page(client, (photo_bytes("circle", 3), "mine.jpg")))
    client.get(f"/images/{prediction_id}/thumbnail")
    other = app.test_client()
    upload_page(other, (photo_bytes("square", 30), "theirs.jpg"))  # a visitor id of its own
    token = csrf_token(other, "/")
    assert 'id="delete"' not in other.get(f"/p/{prediction_id}").get_data(as_text=True)

    theirs = other.post(f"/p/{prediction_id}/delete", data={"csrf_token": token})
    unknown = other.post("/p/0123456789abcdef01234567/delete", data={"csrf_token": token})

    assert theirs.status_code == unknown.status_code == 404
    assert theirs.get_data() == unknown.get_data()  # the same answer: the id is not confirmed
    assert stored_prediction(env["DATABASE_URL"], prediction_id) is not None
    assert all(path.exists() for path in files_of(env, prediction_id))
    # Nor can a program without any session, or a browser with none yet.
    assert app.test_client().post(f"/p/{prediction_id}/delete").status_code == 400


def test_a_delete_without_its_csrf_token_is_refused_and_deletes_nothing(client, env):
    prediction_id = uploaded_id(upload_page(client, (photo_bytes("triangle", 4), "mine.jpg")))
    for data in ({}, {"csrf_token": "forged"}):
        response = client.post(f"/p/{prediction_id}/delete", data=data)
        assert response.status_code == 400
        assert "reload the page" in response.get_data(as_text=True)
    assert stored_prediction(env["DATABASE_URL"], prediction_id) is not None
    assert client.get(f"/images/{prediction_id}").status_code == 200


def test_a_visitor_deletes_their_whole_batch(client, app, env):
    location = upload_page(client, (photo_bytes("circle", 5), "a.jpg"),
                           (photo_bytes("square", 6), "b.jpg"))
    batch_id = uploaded_id(location)
    page = client.get(f"/batches/{batch_id}").get_data(as_text=True)
    assert 'id="delete-batch"' in page
    assert 'id="delete-batch"' not in app.test_client().get(f"/batches/{batch_id}").get_data(
        as_text=True)
    with database(env["DATABASE_URL"]) as db, db.session() as s:
        ids = list(s.scalars(select(Prediction.id).where(Prediction.batch_id == batch_id)))
    other = app.test_client()
    upload_page(other, (photo_bytes("square", 31), "theirs.jpg"))
    refused = other.post(f"/batches/{batch_id}/delete", data={"csrf_token": csrf_token(other, "/")})
    assert refused.status_code == 404

    token = re.search(r'id="delete-batch"[^>]*>\s*<input[^>]*value="([^"]+)"', page).group(1)
    response = client.post(f"/batches/{batch_id}/delete", data={"csrf_token": token})

    assert response.status_code == 303
    assert "Deleted the batch: 2 images" in client.get("/history").get_data(as_text=True)
    assert client.get(f"/batches/{batch_id}").status_code == 404
    assert client.get(f"/api/batches/{batch_id}").status_code == 404
    for prediction_id in ids:
        for url in urls(prediction_id):
            assert client.get(url).status_code == 404, url


# --- administrators --------------------------------------------------------------------------

def test_an_admin_deletes_a_record_from_its_page(admin_client, db, store, env):
    prediction_id = add_prediction(db, store, 7, visitor="someone")
    image, _ = files_of(env, prediction_id)
    page = f"/admin/records/{prediction_id}"
    token = delete_form_token(admin_client, page)

    response = admin_client.post(f"{page}/delete", data={"csrf_token": token})

    assert response.status_code == 303 and response.headers["Location"].endswith("/admin/")
    assert f"deleted record {prediction_id}" in admin_client.get("/admin/").get_data(
        as_text=True)
    assert admin_client.get(page).status_code == 404
    assert stored_prediction(db, prediction_id) is None and not image.exists()
    assert admin_client.post(f"{page}/delete", data={"csrf_token": token}).status_code == 404
    assert admin_client.post(f"/admin/records/{prediction_id}x/delete",
                             data={}).status_code == 400


def test_an_admin_deletes_a_whole_batch_from_a_record_or_the_batch_page(admin_client, db, store):
    first, [member, _] = add_batch(db, store, [1, 1])
    second, _ = add_batch(db, store, [1, 1, 1], seed=900)
    record_page = admin_client.get(f"/admin/records/{member}").get_data(as_text=True)
    token = re.search(r'id="delete-batch"[^>]*>\s*<input[^>]*value="([^"]+)"',
                      record_page).group(1)
    assert admin_client.post(f"/admin/batches/{first}/delete",
                             data={"csrf_token": token}).status_code == 303
    batch_page = admin_client.get(f"/batches/{second}").get_data(as_text=True)
    assert 'id="admin-delete-batch"' in batch_page
    assert admin_client.post(f"/admin/batches/{second}/delete",
                             data={"csrf_token": token}).status_code == 303
    with db.session() as s:
        assert s.scalars(select(Batch)).all() == [] and s.scalars(select(Prediction)).all() == []
    assert admin_client.post(f"/admin/batches/{second}/delete",
                             data={"csrf_token": token}).status_code == 404


def test_the_admin_api_deletes_a_record_and_a_batch_with_a_bearer_token(
        client, db, store, bearer):
    prediction_id = add_prediction(db, store, 8)
    batch_id, members = add_batch(db, store, [1, 1])

    one = client.delete(f"/admin/api/predictions/{prediction_id}", headers=bearer)
    assert one.status_code == 200
    assert one.get_json()["deleted"] | {} == {"records": 1, "batches": 0, "images": 1,
                                              "thumbnails": 0, "manifests": 0}
    whole = client.delete(f"/admin/api/batches/{batch_id}", headers=bearer)
    assert whole.status_code == 200 and whole.get_json()["deleted"]["records"] == 2
    assert whole.get_json()["deleted"]["batches"] == 1

    for url in (f"/admin/api/predictions/{prediction_id}", f"/admin/api/batches/{batch_id}",
                f"/admin/api/predictions/{members[0]}"):
        gone = client.delete(url, headers=bearer)
        assert gone.status_code == 404 and "error" in gone.get_json()


def test_the_admin_api_refuses_a_deletion_without_a_token_or_csrf_header(
        admin_client, app, db, store):
    prediction_id = add_prediction(db, store, 9)
    anonymous = app.test_client().delete(f"/admin/api/predictions/{prediction_id}")
    assert anonymous.status_code == 401
    forged = app.test_client().delete(f"/admin/api/predictions/{prediction_id}",
                                      headers={"Authorization": "Bearer not-a-token"})
    assert forged.status_code == 401
    no_csrf = admin_client.delete(f"/admin/api/predictions/{prediction_id}")
    assert no_csrf.status_code == 400
    assert stored_prediction(db, prediction_id) is not None
    token = re.search(r'name="csrf-token" content="([^"]+)"',
                      admin_client.get("/admin/").get_data(as_text=True)).group(1)
    with_csrf = admin_client.delete(f"/admin/api/predictions/{prediction_id}",
                                    headers={"X-CSRFToken": token})
    assert with_csrf.status_code == 200


def test_a_deletion_is_noted_in_the_manifest_of_a_run_with_who_deleted_it(
        client, db, store, env, bearer):
    visitor_upload = uploaded_id(upload_page(client, (photo_bytes("circle", 9), "x.jpg")))
    by_admin = add_prediction(db, store, 10)
    model = Path(env["MODEL_BASE_PATH"]) / "classifier"
    shas = {pid: stored_prediction(db, pid).image_sha256 for pid in (visitor_upload, by_admin)}
    manifest = run_manifest(model, 4, list(shas.values()))

    assert client.delete(f"/admin/api/predictions/{by_admin}", headers=bearer).status_code == 200

    [note] = json.loads(manifest.read_text())["deleted"]
    assert (note["sha256"], note["reason"]) == (shas[by_admin], "deleted by admin admin")
    assert json.loads(manifest.read_text())["reviewed"][0]["sha256"] == shas[visitor_upload]


def test_a_visitors_deletion_is_noted_as_by_its_uploader(client, db, env):
    prediction_id = uploaded_id(upload_page(client, (photo_bytes("square", 11), "x.jpg")))
    sha = stored_prediction(db, prediction_id).image_sha256
    manifest = run_manifest(Path(env["MODEL_BASE_PATH"]) / "classifier", 5, [sha])
    token = delete_form_token(client, f"/p/{prediction_id}")
    assert client.post(f"/p/{prediction_id}/delete", data={"csrf_token": token}).status_code == 303
    [note] = json.loads(manifest.read_text())["deleted"]
    assert (note["sha256"], note["reason"]) == (sha, "deleted by its uploader")


# --- caches ----------------------------------------------------------------------------------

def test_images_and_thumbnails_are_never_kept_by_a_cache(client, admin_client, db, store):
    prediction_id = add_prediction(db, store, 12)
    for url in (f"/images/{prediction_id}", f"/images/{prediction_id}/thumbnail"):
        response = client.get(url)
        assert response.status_code == 200, url
        directives = {d.strip() for d in response.headers["Cache-Control"].split(",")}
        assert {"private", "no-store"} <= directives and "public" not in directives, url
        revalidated = client.get(url, headers={"If-None-Match": response.headers["ETag"]})
        assert revalidated.headers["Cache-Control"] == response.headers["Cache-Control"]
