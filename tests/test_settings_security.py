"""Secrets the site refuses to run with: a predictable SECRET_KEY in production,
and the development key on an address other machines can reach (core/settings.py,
gunicorn.conf.py). The bind refusal is shown on the real gunicorn command."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

import pytest

from core.credentials import loopback, secret_bits
from core.settings import DEV_SECRET_KEY, MIN_SECRET_BITS, ROOT, Settings, SettingsError
from tests.factories import free_port

WEAK = {
    "one-character": "a" * 32,
    "two-characters": "ab" * 16,
    "a-word-repeated": "password" * 6,
    "a-word-repeated-with-a-change": "password" * 5 + "1",
    "a-run": "abcdefghijklmnopqrstuvwxyz0123456789",
    "a-phrase-repeated": "correct horse battery staple " * 2,
    "a-date-repeated": "2026-03-01" * 4,
}
STRONG = {
    "token_urlsafe(48)": secrets.token_urlsafe(48),
    "token_hex(32)": secrets.token_hex(32),
    "token_urlsafe(32)": secrets.token_urlsafe(32),
}


def production(monkeypatch: pytest.MonkeyPatch, secret: str) -> Settings:
    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.setenv("SECRET_KEY", secret)
    return Settings.from_env()


@pytest.mark.parametrize("secret", list(WEAK.values()), ids=list(WEAK))
def test_production_refuses_a_predictable_secret_key_and_says_how_to_make_one(monkeypatch,
                                                                              secret):
    assert len(secret) >= 32  # long enough: only its randomness is wrong
    with pytest.raises(SettingsError) as refused:
        production(monkeypatch, secret)
    message = str(refused.value)
    assert "SECRET_KEY is too predictable" in message
    assert "secrets.token_urlsafe(48)" in message


@pytest.mark.parametrize("secret", list(STRONG.values()), ids=list(STRONG))
def test_production_takes_a_random_secret_key(monkeypatch, secret):
    assert production(monkeypatch, secret).secret_key == secret


def test_random_keys_pass_with_room_to_spare():
    """The estimate errs low, never so low that a generated key fails: the weakest
    of 500 of each kind still clears the bar."""
    for make in (lambda: secrets.token_urlsafe(48), lambda: secrets.token_hex(32),
                 lambda: secrets.token_urlsafe(32)):
        assert min(secret_bits(make()) for _ in range(500)) > MIN_SECRET_BITS + 30


def test_development_takes_any_key(monkeypatch):
    monkeypatch.setenv("APP_ENV", "development")
    monkeypatch.setenv("SECRET_KEY", "a" * 32)
    assert Settings.from_env().secret_key == "a" * 32


@pytest.mark.parametrize("host, local", [
    ("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("[::1]", True),
    ("localhost", True), ("LOCALHOST", True), ("0.0.0.0", False), ("::", False),
    ("", False), ("192.168.1.10", False), ("10.0.0.1", False), ("example.com", False),
    ("localhost.example.com", False),
])
def test_only_loopback_addresses_count_as_local(host, local):
    assert loopback(host) is local


def test_the_development_key_is_refused_for_a_non_loopback_host_only(monkeypatch):
    monkeypatch.delenv("SECRET_KEY", raising=False)
    monkeypatch.setenv("APP_ENV", "development")
    monkeypatch.setenv("WEB_BIND", "0.0.0.0:8000")
    settings = Settings.from_env()  # workers and the trainer read these and bind nothing
    assert settings.secret_key == DEV_SECRET_KEY
    settings.check_site_host("127.0.0.1")
    with pytest.raises(SettingsError, match="development SECRET_KEY"):
        settings.check_site_host("0.0.0.0")
    monkeypatch.setenv("SECRET_KEY", secrets.token_urlsafe(48))
    Settings.from_env().check_site_host("0.0.0.0")  # a key of one's own: any address


def gunicorn_start(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """The site's real start command; it must exit by itself, within 60 s."""
    return subprocess.run([sys.executable, "-m", "gunicorn", *args, "frontend:create_app()"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture
def dev_env(tmp_path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "WEB_BIND")}
    return env | {"APP_ENV": "development", "DATABASE_URL": f"sqlite:///{tmp_path}/app.db",
                  "PORT": str(free_port())}


def test_gunicorn_refuses_to_serve_the_development_key_on_every_address(dev_env):
    port = free_port()
    started = gunicorn_start(dev_env | {"WEB_BIND": f"0.0.0.0:{port}"})
    assert started.returncode != 0
    assert "refusing to start" in started.stderr
    assert "development SECRET_KEY" in started.stderr
    assert "Traceback" not in started.stderr


def test_gunicorn_refuses_a_command_line_bind_too(dev_env):
    """`--bind` wins over gunicorn.conf.py's `bind`: the check reads the final one."""
    started = gunicorn_start(dev_env, "--bind", f"0.0.0.0:{free_port()}")
    assert started.returncode != 0
    assert "development SECRET_KEY" in started.stderr


def test_gunicorn_refuses_a_predictable_production_key(dev_env):
    started = gunicorn_start(dev_env | {"APP_ENV": "production", "SECRET_KEY": "k" * 48,
                                        "WEB_BIND": f"127.0.0.1:{free_port()}"})
    assert started.returncode != 0
    assert "SECRET_KEY is too predictable" in started.stderr
    assert "Traceback" not in started.stderr
