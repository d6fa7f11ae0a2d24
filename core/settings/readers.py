"""Readers of one environment variable each, with the error a wrong value gets.

Only the settings package calls them: it is the one reader of the environment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


class SettingsError(ValueError):
    """A setting with a value the process must not run with."""


#: The repository's root: relative defaults are resolved against it, not the
#: caller's working directory, so the commands work from anywhere.
ROOT = Path(__file__).resolve().parent.parent.parent


def env_path(name: str, default: str) -> Path:
    value = Path(os.environ.get(name) or default).expanduser()
    return value if value.is_absolute() else ROOT / value


def env_int(name: str, default: int, minimum: int = 1) -> int:
    return _number(name, default, minimum, int, "a whole number")


def env_number(name: str, default: float, minimum: float = 0.0) -> float:
    return _number(name, default, minimum, float, "a number")


def _number(name: str, default: Any, minimum: Any, kind: type, what: str) -> Any:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise SettingsError(f"{name} must be {what}, not {raw!r}") from None
    if not value >= minimum:  # NaN too
        raise SettingsError(f"{name} must be at least {minimum}, not {value}")
    return value


def env_fraction(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number between 0 and 1, not {raw!r}") from None
    if not 0.0 <= value <= 1.0:
        raise SettingsError(f"{name} must be between 0 and 1, not {value}")
    return value


def env_secret(name: str) -> str | None:
    """NAME, or the contents of the file NAME_FILE names (its surrounding blanks dropped).

    Compose and Docker mount secrets as files under /run/secrets/: unlike environment
    variables, they are not shown by `docker inspect` nor inherited by child processes.
    """
    path = os.environ.get(f"{name}_FILE")
    if not path:
        return os.environ.get(name) or None
    try:
        return Path(path).read_text().strip() or None
    except OSError as exc:
        raise SettingsError(f"{name}_FILE={path!r} cannot be read: {exc.strerror}") from None


def env_bool(name: str, default: bool) -> bool:
    raw = (os.environ.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name} must be true or false, not {raw!r}")


def env_text(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name) or default
