"""`python -m trainer worker`: the one consumer of the training queue.

An RQ SimpleWorker runs each training run in the worker's own process, so
TensorFlow loads once, not once per run; only this worker imports
TensorFlow among the queue consumers (worker/ never does). On start it reaps
the runs of a trainer worker that died (core/training.py), so a run killed
mid-way reads as failed and leaves no half version behind.
"""

from __future__ import annotations

import logging

import rq

from core.db import Database
from core.lifecycle.connections import connect_redis
from core.settings import Settings
from core.training import reap

log = logging.getLogger(__name__)


def work(settings: Settings, *, burst: bool = False) -> int:
    db = Database(settings.database_url)
    with db.session() as session:
        dead = reap(session, settings)
    if dead:
        log.warning("training run(s) %s had lost their worker: marked failed", ", ".join(dead))
    db.dispose()
    # No socket timeout: the worker blocks on Redis while it waits for work.
    connection = connect_redis(settings, socket_timeout=None)
    queue = rq.Queue(settings.training_queue, connection=connection)
    worker = rq.SimpleWorker([queue], connection=connection)
    worker.work(burst=burst, with_scheduler=False, logging_level="INFO")
    return 0
