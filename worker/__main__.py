"""`python -m worker`: an RQ worker on the predictions queue, sweeping lost records.

    python -m worker              work until stopped (SIGTERM finishes the current job)
    python -m worker --burst      work until the queue is empty, then exit
    python -m worker sweep        enqueue lost records once, then exit
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
import time
from datetime import timedelta

from redis import RedisError
from rq import SimpleWorker, Worker

import worker.tasks  # noqa: F401  loaded once, not again in each forked job (--fork)
from core.db import Database
from core.settings import SettingsError, get_settings
from worker import jobs
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker", description=__doc__.split("\n")[0])
    parser.add_argument("command", nargs="?", choices=["work", "sweep"], default="work")
    parser.add_argument("--burst", action="store_true",
                        help="exit once the queue is empty (retries scheduled for later and "
                             "the sweeper are left to a long-running worker)")
    parser.add_argument("--fork", action="store_true",
                        help="run each job in a forked process (RQ's default), isolating "
                             "crashes at about 140 ms a job; by default jobs run in this "
                             "process, which keeps its connections")
    parser.add_argument("--sweep-interval", type=float, default=10.0, metavar="SECONDS")
    parser.add_argument("--grace", type=float, default=10.0, metavar="SECONDS",
                        help="sweep: leave records younger than this to their jobs")
    parser.add_argument("--name", help="worker name shown in the admin statistics")
    parser.add_argument("--wait-for-redis", type=float, default=30.0, metavar="SECONDS",
                        help="how long to wait for Redis at start-up (it may be starting "
                             "beside the worker)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        settings = get_settings()
        # No socket timeout: RQ blocks on Redis for longer than the site's 10 s.
        connection = jobs.connect(settings, socket_timeout=None)
        _wait_for(connection, settings.redis_url, args.wait_for_redis)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RedisError as exc:
        print(f"error: cannot reach Redis at {get_settings().redis_url}: {exc}", file=sys.stderr)
        return 2
    queue = jobs.queue(settings, connection)
    db = Database(settings.database_url)
    if args.command == "sweep":
        counts = sweep(db, queue, settings, grace=timedelta(seconds=args.grace))
        print(counts if counts is not None else "another sweep is running; try again later")
        return 0
    if not args.burst:
        _start_sweeping(db, queue, settings, args.sweep_interval)
    worker_class = Worker if args.fork else SimpleWorker
    while True:
        worker = None
        try:  # the constructor talks to Redis too
            worker = worker_class([queue], connection=connection, name=args.name,
                                  maintenance_interval=MAINTENANCE_INTERVAL,
                                  worker_ttl=WORKER_TTL)
            worker.work(burst=args.burst, with_scheduler=True, logging_level="INFO")
        except RedisError as exc:  # raised by its teardown, Redis still away
            log.warning("the worker stopped on a Redis error: %s", exc)
        # RQ's private mark of a SIGTERM or Ctrl-C: rq 3.0 has no public one.
        if args.burst or (worker is not None and worker._shutdown_requested_date is not None):
            return 0
        # RQ's loop rides out a Redis outage only while it waits for a job; one that
        # hits it anywhere else (a job's result, a heartbeat) ends it ("found an
        # unhandled exception, quitting"). Its job's records are left to the sweeper.
        log.warning("the worker loop ended (RQ logged why, above); starting it again once "
                    "Redis answers")
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the dead loop's handlers
        signal.signal(signal.SIGINT, signal.default_int_handler)
        time.sleep(1)
        _wait_for(connection, settings.redis_url, float("inf"))
        if worker is not None:  # its dead registration, if Redis kept it
            with contextlib.suppress(RedisError):
                connection.delete(worker.key)


def _wait_for(connection, url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            connection.ping()
            return
        except RedisError:
            if time.monotonic() >= deadline:
                raise
            log.info("waiting for Redis at %s", url)
            time.sleep(1)


def _start_sweeping(db: Database, queue, settings, interval: float) -> None:
    def loop() -> None:
        stop = threading.Event()
        while not stop.wait(interval):
            try:
                sweep(db, queue, settings)
            except RedisError as exc:  # an outage: said once a sweep, not with a traceback
                log.warning("sweep skipped, Redis is unreachable: %s", exc)
            except Exception:  # a sweep failing must not stop the worker
                log.exception("sweep failed")

    threading.Thread(target=loop, name="sweeper", daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
