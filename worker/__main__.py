"""`python -m worker`: an RQ worker on the prediction queues, sweeping lost records.

Single uploads are taken before batch chunks (core/lifecycle/connections.py).

    python -m worker              work until stopped (SIGTERM finishes the current job),
                                  its Prometheus metrics on --metrics-port (WORKER_METRICS_PORT)
    python -m worker --burst      work until the queues are empty, then exit
    python -m worker sweep        enqueue lost records once, then exit
    python -m worker purge        delete the uploads past RETENTION_DAYS once, then exit
                                  (--dry-run: only count them)
"""

from __future__ import annotations

import argparse
import logging
import sys

from redis import RedisError

import worker.tasks  # noqa: F401  loaded once, not again in each forked job (--fork)
from core.credentials import redacted
from core.lifecycle.connections import Connections
from core.settings import SettingsError, get_settings
from worker import metrics, retention, runner


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker", description=__doc__.split("\n")[0])
    parser.add_argument("command", nargs="?", choices=["work", "sweep", "purge"], default="work")
    parser.add_argument("--burst", action="store_true",
                        help="exit once the queues are empty (retries scheduled for later and "
                             "the sweeper are left to a long-running worker)")
    parser.add_argument("--fork", action="store_true",
                        help="run each job in a forked process (RQ's default), isolating "
                             "crashes at about 140 ms a job; by default jobs run in this "
                             "process, which keeps its connections")
    parser.add_argument("--sweep-interval", type=float, default=10.0, metavar="SECONDS")
    parser.add_argument("--grace", type=float, default=10.0, metavar="SECONDS",
                        help="sweep: leave records younger than this to their jobs")
    parser.add_argument("--dry-run", action="store_true",
                        help="purge: count what would be deleted, delete nothing")
    parser.add_argument("--name", help="worker name shown in the admin statistics")
    parser.add_argument("--metrics-port", type=_port, metavar="PORT",
                        help="serve this worker's Prometheus metrics on PORT (default: "
                             "WORKER_METRICS_PORT; 0: none); long-running workers only")
    parser.add_argument("--wait-for-redis", type=float, default=30.0, metavar="SECONDS",
                        help="how long to wait for Redis at start-up (it may be starting "
                             "beside the worker)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        settings = get_settings()
        connection = runner.connect(settings, args.wait_for_redis)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RedisError as exc:
        print(f"error: cannot reach Redis at {redacted(settings.redis_url)}: {exc}",
              file=sys.stderr)
        return 2
    if args.command == "sweep":
        counts = runner.sweep_once(settings, args.grace)
        print(counts if counts is not None else "another sweep is running; try again later")
        return 0
    if args.command == "purge":
        return purge(settings, dry_run=args.dry_run)
    port = settings.monitoring.worker_metrics_port if args.metrics_port is None \
        else args.metrics_port
    if port and not args.burst:
        metrics.serve(settings, port, fork=args.fork)
    runner.work(settings, connection, burst=args.burst, fork=args.fork, name=args.name,
                sweep_interval=args.sweep_interval)
    return 0


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0-65535)")
    return port


def purge(settings, *, dry_run: bool) -> int:
    if settings.retention_days == 0:
        print("retention is off (RETENTION_DAYS=0): every upload is kept")
        return 0
    kept = " (reviewed ones kept)" if settings.retention_keep_reviewed else ""
    print(f"uploads older than {settings.retention_days} days{kept}:")
    counts = retention.purge(Connections.from_settings(settings), dry_run=dry_run)
    print(counts if counts is not None else "another purge is running; try again later")
    return 0


if __name__ == "__main__":
    sys.exit(main())
