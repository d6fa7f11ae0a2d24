"""One process's connections: the database, the image store, Redis, the queues, Serving.

The site makes one per app and the workers one per process (again after a
fork: RQ's --fork runs each job in a child). Redis fails fast by default: an
upload or a job's notice must not hang on a dead Redis. RQ's own worker loop
blocks on Redis for longer, and opens its connection with no socket timeout.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property

from redis import Redis
from rq import Queue

from core.db import Database
from core.serving_client import ServingClient
from core.settings import Settings, get_settings
from core.storage import ImageStore

#: Seconds a Redis call may take before it counts as an outage.
REDIS_TIMEOUT = 10


def connect_redis(settings: Settings, *, socket_timeout: float | None = REDIS_TIMEOUT) -> Redis:
    return Redis.from_url(settings.redis_url, socket_connect_timeout=2,
                          socket_timeout=socket_timeout, health_check_interval=30)


def queues(settings: Settings, connection: Redis) -> list[Queue]:
    """The prediction queues in the order workers serve them: single uploads, then
    batch chunks. RQ's worker takes a job from the first queue that holds one, so
    a single upload waits only for the jobs already running, and a batch moves
    on whenever no single upload waits."""
    return [Queue(name, connection=connection)
            for name in (settings.queue_name, settings.batch_queue_name)]


@dataclass
class Connections:
    settings: Settings
    db: Database
    store: ImageStore
    redis: Redis

    @classmethod
    def from_settings(cls, settings: Settings) -> Connections:
        return cls(settings=settings, db=Database(settings.database_url),
                   store=ImageStore(settings.upload_dir), redis=connect_redis(settings))

    @cached_property
    def queues(self) -> list[Queue]:
        """Both prediction queues, in the order workers serve them."""
        return queues(self.settings, self.redis)

    @cached_property
    def queue(self) -> Queue:
        """Single uploads' queue."""
        return self.queues[0]

    @cached_property
    def batch_queue(self) -> Queue:
        """Batch chunks' queue."""
        return self.queues[1]

    def queue_for(self, batch_id: str | None) -> Queue:
        """Where the job of a record goes: a batch's chunks on the batch queue, an
        upload of its own (page or API) on the singles' queue."""
        return self.batch_queue if batch_id else self.queue

    @cached_property
    def serving(self) -> ServingClient:
        """The workers' client: retries a restarting Serving, sends a chunk per call."""
        s = self.settings
        return ServingClient(s.serving_url, s.model_name, batch_size=s.chunk_size)

    def close(self) -> None:
        if "serving" in self.__dict__:
            self.serving.close()
        self.redis.close()
        self.db.dispose()


_this_process: tuple[int, Connections] | None = None


def for_this_process() -> Connections:
    """The same Connections for every job of a process, made anew in a forked child,
    whose inherited sockets belong to its parent."""
    global _this_process
    if _this_process is None or _this_process[0] != os.getpid():
        _this_process = (os.getpid(), Connections.from_settings(get_settings()))
    return _this_process[1]
