"""An RQ worker that outlives Redis outages, with a sweep of lost records and the
retention purge (worker/retention.py) beside it.

RQ's loop rides out a Redis outage only while it waits for a job; one that
hits it anywhere else (a job's result, a heartbeat) ends it ("found an
unhandled exception, quitting"). This loop then waits for Redis and starts
RQ's again; the records of the job cut short are left to the sweep.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from datetime import timedelta

import rq
from redis import Redis, RedisError

from core.credentials import redacted
from core.lifecycle.connections import Connections, connect_redis, for_this_process, queues
from core.settings import Settings
from worker import retention, watch
from worker.sweeper import sweep

log = logging.getLogger("worker")

#: RQ starts a worker's scheduler (which enqueues the delayed retries) at start-up,
#: if it gets the scheduler lock, and after that only in its maintenance: every
#: 10 minutes by default, between blocking waits for a job of worker_ttl - 15 s.
#: A scheduler that died (Redis went away) or whose worker was killed (its lock
#: lasts 61 s more) would leave every retry waiting up to 10 minutes; with these,
#: another worker's maintenance starts one within a minute.
MAINTENANCE_INTERVAL = 10
WORKER_TTL = 30


class _StopMarked:
    """Remembers a SIGTERM or Ctrl-C, which ends RQ's loop as any outage does."""

    stop_requested = False

    def request_stop(self, signum, frame):
        self.stop_requested = True
        super().request_stop(signum, frame)


class InProcessWorker(_StopMarked, rq.SimpleWorker):
    """Jobs in this process, keeping its connections (the default)."""


class ForkingWorker(_StopMarked, rq.Worker):
    """Each job in a forked child, as RQ does by default: crashes isolated."""


def connect(settings: Settings, wait: float) -> Redis:
    """RQ's connection, once Redis answers; no socket timeout, since RQ blocks
    on Redis for longer than the site's."""
    connection = connect_redis(settings, socket_timeout=None)
    wait_for_redis(connection, settings.redis_url, wait)
    return connection


def work(settings: Settings, connection: Redis, *, burst: bool, fork: bool,
         name: str | None, sweep_interval: float) -> None:
    """Works off both queues, single uploads first, until stopped (or, with `burst`,
    until they are empty)."""
    if not burst:
        start_sweeping(for_this_process(), sweep_interval)
        retention.start_purging(for_this_process())
        watch.start_watching(for_this_process())
    worker_class = ForkingWorker if fork else InProcessWorker
    while True:
        worker = None
        try:  # the constructor talks to Redis too
            worker = worker_class(queues(settings, connection), connection=connection,
                                  name=name, maintenance_interval=MAINTENANCE_INTERVAL,
                                  worker_ttl=WORKER_TTL)
            worker.work(burst=burst, with_scheduler=True, logging_level="INFO")
        except RedisError as exc:  # raised by its teardown, Redis still away
            log.warning("the worker stopped on a Redis error: %s", exc)
        if burst or (worker is not None and worker.stop_requested):
            return
        log.warning("the worker loop ended (RQ logged why, above); starting it again once "
                    "Redis answers")
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the dead loop's handlers
        signal.signal(signal.SIGINT, signal.default_int_handler)
        time.sleep(1)
        wait_for_redis(connection, settings.redis_url, float("inf"))
        if worker is not None:  # its dead registration, if Redis kept it
            with contextlib.suppress(RedisError):
                connection.delete(worker.key)


def wait_for_redis(connection: Redis, url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            connection.ping()
            return
        except RedisError:
            if time.monotonic() >= deadline:
                raise
            log.info("waiting for Redis at %s", redacted(url))
            time.sleep(1)


def start_sweeping(conns: Connections, interval: float) -> None:
    def loop() -> None:
        stop = threading.Event()
        while not stop.wait(interval):
            try:
                sweep(conns)
            except RedisError as exc:  # an outage: said once a sweep, not with a traceback
                log.warning("sweep skipped, Redis is unreachable: %s", exc)
            except Exception:  # a sweep failing must not stop the worker
                log.exception("sweep failed")

    threading.Thread(target=loop, name="sweeper", daemon=True).start()


def sweep_once(settings: Settings, grace: float) -> dict[str, int] | None:
    return sweep(Connections.from_settings(settings), grace=timedelta(seconds=grace))
