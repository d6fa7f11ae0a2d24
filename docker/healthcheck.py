"""Health checks for the site's and the workers' containers (docker-compose.yml).

    python /app/healthcheck.py web      GET /healthz on WEB_BIND's port answers 200
    python /app/healthcheck.py worker   an RQ worker of this container is registered in Redis

Exit status 0 is healthy and 1 is not (Docker reserves 2, so a usage error is
1 too); what is printed lands in `docker inspect`'s health log. The image has
no curl, and a live process alone says little: a worker whose Redis heartbeat
stopped has its registration expire, so the worker check sees a hung worker.
"""

from __future__ import annotations

import os
import socket
import sys
import urllib.error
import urllib.request

TIMEOUT = 5.0


def check_web() -> bool:
    """/healthz answers 200 only when the database and Redis both answer."""
    bind = os.environ.get("WEB_BIND", "127.0.0.1:8000")
    host, _, port = bind.rpartition(":")
    if bind.startswith("unix:") or not port.isdigit():
        print(f"cannot check WEB_BIND={bind!r}: not host:port")
        return False
    if host in ("", "0.0.0.0", "[::]"):  # listening everywhere: ask the loopback
        host = "127.0.0.1"
    url = f"http://{host}:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            print(response.status, response.read(500).decode(errors="replace"))
            return response.status == 200
    except urllib.error.HTTPError as exc:  # 503: degraded, the body says which part
        print(exc.code, exc.read(500).decode(errors="replace"))
    except OSError as exc:
        print(f"{url}: {exc}")
    return False


def check_worker() -> bool:
    """True when Redis lists a live worker whose host is this container.

    RQ registers each worker with its host name and drops the registration
    when its heartbeat lapses, so this sees both a dead and a stuck worker.
    """
    from redis import Redis, RedisError
    from rq import Worker

    from core.credentials import redacted
    from core.settings import SettingsError, get_settings

    try:  # the worker's own settings: REDIS_URL with the password of REDIS_PASSWORD_FILE
        url = get_settings().redis_url
    except SettingsError as exc:
        print(f"settings: {exc}")
        return False
    try:
        connection = Redis.from_url(url, socket_connect_timeout=TIMEOUT, socket_timeout=TIMEOUT)
        workers = Worker.all(connection=connection)
    except RedisError as exc:
        print(f"Redis at {redacted(url)}: {exc}")
        return False
    here = socket.gethostname()
    mine = [w.name for w in workers if w.hostname == here]
    print(f"workers on {here}: {', '.join(mine) or 'none'} ({len(workers)} in all)")
    return bool(mine)


CHECKS = {"web": check_web, "worker": check_worker}


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in CHECKS:
        print(f"usage: healthcheck.py {{{'|'.join(CHECKS)}}}", file=sys.stderr)
        return 1
    return 0 if CHECKS[argv[0]]() else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
