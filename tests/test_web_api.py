"""The JSON API's contract, the command-line client, the migrations, and the
rule that the web and worker processes never load TensorFlow."""

from __future__ import annotations

import csv
import io
import re
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from openapi_spec_validator import validate
from sqlalchemy import create_engine, inspect
from werkzeug.serving import make_server

from core import migrate
from core.db import Base
from core.rollout import records  # noqa: F401 (the roll-out tables join Base.metadata)
from core.settings import ROOT
from frontend import client as cli
from tests.factories import SHAPES, image_bytes, photo_file


def test_the_openapi_document_is_valid_and_lists_every_api_route(client, app):
    document = client.get("/api/openapi.json").json
    validate(document)
    routes = {(re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule), method.lower())
              for rule in app.url_map.iter_rules()
              if rule.rule.startswith(("/api/", "/admin/api/"))
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert routes == {(path, method) for path, item in document["paths"].items()
                      for method in item}


def test_api_errors_are_json_with_a_message(client):
    for response, status in [(client.get("/api/predictions/nope"), 404),
                             (client.get("/api/batches/nope"), 404),
                             (client.get("/api/nothing-here"), 404),
                             (client.delete("/api/predictions"), 405),
                             (client.post("/api/predictions"), 400),
                             (client.post("/api/batches"), 400)]:
        assert response.status_code == status
        assert set(response.json) == {"error"} and response.json["error"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_database_that_cannot_be_reached_answers_503_as_documented(env, monkeypatch):
    from frontend import create_app

    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:9/nothing")
    client = create_app({"TESTING": True}).test_client()
    for response in [client.get("/api/predictions/abc"), client.get("/api/batches/abc")]:
        assert response.status_code == 503
        assert response.json == {"error": "the database cannot be reached; try again shortly"}
    upload = client.post("/api/predictions", data={"image": (io.BytesIO(image_bytes()), "a.jpg")})
    assert upload.status_code == 503 and "try again" in upload.json["error"]
    document = client.get("/api/openapi.json").json
    assert "503" in document["paths"]["/api/predictions/{prediction_id}"]["get"]["responses"]


def test_served_versions_come_from_servings_status_api(client, serving, trained):
    body = client.get("/api/models").json
    assert body == {"model": "classifier", "versions": [
        {"version": trained.version, "state": "AVAILABLE", "error": None}]}


def test_served_versions_answer_503_when_serving_is_down(client):
    response = client.get("/api/models")
    assert response.status_code == 503
    assert response.json["error"] == "the model server is unavailable"


@pytest.fixture
def site(app) -> Iterator[str]:
    """The app on a real port, for clients outside the process."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_the_command_line_client_classifies_a_folder_into_a_csv(
        serving, site, worker_process, tmp_path):
    folder = tmp_path / "photos"
    for kind in SHAPES:
        for seed in range(3):
            photo_file(folder / kind, kind, seed)
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out.csv"
    code = cli.main(["classify", str(folder), "--url", site, "--out", str(out),
                     "--per-request", "4", "--timeout", "120"])
    rows = {r["path"]: r for r in csv.DictReader(out.open())}
    assert len(rows) == 10
    assert rows["notes.txt"]["status"] == "rejected"
    assert code == 1  # not everything was an image
    done = [r for name, r in rows.items() if name != "notes.txt"]
    assert all(r["status"] == "done" for r in done)
    assert sum(r["label"] == r["path"].split("/")[0] for r in done) >= 8


def test_the_command_line_client_explains_an_unreachable_site(tmp_path, capsys):
    (tmp_path / "a.jpg").write_bytes(b"x")
    assert cli.main(["classify", str(tmp_path), "--url", "http://127.0.0.1:9"]) == 2
    assert "cannot reach" in capsys.readouterr().err


def test_web_and_worker_processes_never_import_tensorflow(env):
    code = ("import sys, frontend, worker.tasks, worker.__main__, frontend.client\n"
            "frontend.create_app()\n"
            "loaded = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('tensorflow', 'keras'))\n"
            "assert not loaded, loaded\n")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


def test_migrations_build_the_schema_of_core_db_and_come_back_down(database_url):
    migrate.downgrade(database_url, "base")
    engine = create_engine(database_url)
    try:
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        migrate.upgrade(database_url)
        with engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert differences == []
        assert migrate.current(database_url) == migrate.head()
    finally:
        engine.dispose()


def test_flask_db_upgrade_reports_the_revision(runner):
    result = runner.invoke(args=["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert f"revision {migrate.head()}" in result.output

