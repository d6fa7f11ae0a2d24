"""Secrets read from files (SECRET_KEY_FILE, POSTGRES_PASSWORD_FILE, REDIS_PASSWORD_FILE,
ADMIN_PASSWORD_FILE), as compose mounts them under /run/secrets/, and the passwords
carried into the database and Redis URLs: checked against a real redis-server that
requires one."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from redis import AuthenticationError, Redis, ResponseError
from sqlalchemy.engine import make_url

from core.credentials import redacted
from core.lifecycle.connections import connect_redis
from core.settings import Settings, SettingsError
from tests.factories import free_port, stop, wait_until

PASSWORD = "p@ss/w:rd?#%"  # every character a URL would misread
KEY = "Xq3v9Lr0TzW8bN1cYk5pHs2mJd7uFa4eGi6oRw0tVy8xZl3n"  # random, as make secrets makes it


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("SECRET_KEY", "POSTGRES_PASSWORD", "REDIS_PASSWORD", "ADMIN_PASSWORD",
                 "DATABASE_URL", "REDIS_URL", "APP_ENV"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(f"{name}_FILE", raising=False)
    return monkeypatch


def secret_file(folder: Path, name: str, value: str) -> str:
    path = folder / name
    path.write_text(value + "\n")  # as `make secrets` and most editors leave it
    return str(path)


def test_secrets_come_from_the_files_named(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("SECRET_KEY_FILE", secret_file(tmp_path, "key", KEY))
    clean_env.setenv("ADMIN_PASSWORD_FILE", secret_file(tmp_path, "admin", "first admin"))
    clean_env.setenv("DATABASE_URL", "postgresql+psycopg://classifier@postgres:5432/classifier")
    clean_env.setenv("POSTGRES_PASSWORD_FILE", secret_file(tmp_path, "pg", PASSWORD))
    clean_env.setenv("REDIS_URL", "redis://redis:6379/0")
    clean_env.setenv("REDIS_PASSWORD_FILE", secret_file(tmp_path, "redis", PASSWORD))
    settings = Settings.from_env()
    assert settings.secret_key == KEY
    assert settings.admin_password == "first admin"
    url = make_url(settings.database_url)
    assert (url.username, url.password, url.host, url.database) == (
        "classifier", PASSWORD, "postgres", "classifier")
    redis = Redis.from_url(settings.redis_url).connection_pool.connection_kwargs
    assert (redis["password"], redis["host"], redis["db"]) == (PASSWORD, "redis", 0)
    for shown in (redacted(settings.database_url), redacted(settings.redis_url)):
        assert "p%40ss" not in shown and PASSWORD not in shown and ":***@" in shown


def test_a_url_keeps_its_own_password_and_sqlite_gets_none(
        clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("REDIS_URL", "redis://:own@127.0.0.1:6379/3")
    clean_env.setenv("REDIS_PASSWORD", "other")
    clean_env.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'app.db'}")
    clean_env.setenv("POSTGRES_PASSWORD", "unused")
    settings = Settings.from_env()
    assert settings.redis_url == "redis://:own@127.0.0.1:6379/3"
    assert settings.database_url == f"sqlite:///{tmp_path / 'app.db'}"
    assert redacted(settings.database_url) == settings.database_url


@pytest.mark.parametrize("name", ["SECRET_KEY", "POSTGRES_PASSWORD", "REDIS_PASSWORD"])
def test_an_unreadable_secret_file_stops_the_process_with_its_name(
        clean_env: pytest.MonkeyPatch, tmp_path: Path, name: str) -> None:
    """Never a silent fallback to the development key or to no password."""
    clean_env.setenv(f"{name}_FILE", str(tmp_path / "missing"))
    with pytest.raises(SettingsError, match=f"{name}_FILE=.*missing.* cannot be read"):
        Settings.from_env()


def test_the_processes_reach_a_redis_that_wants_the_password_from_the_file(
        clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    server_binary = shutil.which("redis-server")
    if server_binary is None:
        pytest.skip("no redis-server")
    port = free_port()
    with (tmp_path / "redis.log").open("w") as log:
        server = subprocess.Popen(
            [server_binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(tmp_path), "--requirepass", PASSWORD],
            stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: _answers(port), 20, "redis-server with a password",
                   detail=lambda: (tmp_path / "redis.log").read_text())
        clean_env.setenv("REDIS_URL", f"redis://127.0.0.1:{port}/0")
        with pytest.raises((AuthenticationError, ResponseError), match="(?i)auth"):
            connect_redis(Settings.from_env()).set("key", "value")
        clean_env.setenv("REDIS_PASSWORD_FILE", secret_file(tmp_path, "redis", PASSWORD))
        connection = connect_redis(Settings.from_env())
        assert connection.set("key", "value") and connection.get("key") == b"value"
    finally:
        stop(server, timeout=10)


def _answers(port: int) -> bool:
    try:
        return Redis(port=port, password=PASSWORD, socket_connect_timeout=1).ping()
    except Exception:  # noqa: BLE001 (not up yet, in any way)
        return False
