"""The workers' periodic checks of the model in service: the canary guard
(core/rollout/guard.py), every ROLLOUT_CHECK_INTERVAL seconds, and drift
(core/rollout/drift.py), every DRIFT_CHECK_INTERVAL seconds.

However many workers run, one does each check per interval: the first to
ask after a Redis key expired sets it again (SET NX EX) and runs the check.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from redis import RedisError

from core.lifecycle.connections import Connections
from core.rollout import drift, guard

log = logging.getLogger(__name__)


def checks(conns: Connections) -> list[tuple[str, float, Callable[[Connections], object]]]:
    """(name, interval in seconds, check) of every periodic check."""
    return [("rollout-guard", conns.settings.rollout.check_interval, guard.check),
            ("drift", conns.settings.monitoring.drift_interval, drift.check)]


def start_watching(conns: Connections) -> None:
    for name, interval, check in checks(conns):
        threading.Thread(target=_loop, args=(conns, name, interval, check),
                         name=name, daemon=True).start()


def _loop(conns: Connections, name: str, interval: float,
          check: Callable[[Connections], object]) -> None:
    stop = threading.Event()
    while not stop.wait(min(interval, 5.0)):
        try:
            if conns.redis.set(f"watch:{name}:due", 1, nx=True, ex=max(int(interval), 1)):
                check(conns)
        except RedisError as exc:
            log.warning("%s skipped, Redis is unreachable: %s", name, exc)
        except Exception:  # a check failing must not stop the worker
            log.exception("%s failed", name)
