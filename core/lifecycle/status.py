"""A prediction's statuses, and which of them a job may still change."""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


#: A job may still answer these: a worker writes its result only over one of them.
UNFINISHED = (Status.QUEUED, Status.RUNNING)
#: Final until an administrator retries a failed one.
FINISHED = (Status.DONE, Status.FAILED)
