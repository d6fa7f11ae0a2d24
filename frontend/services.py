"""What the site's requests share: settings, the database, the image store and the queue."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from flask import current_app
from redis import Redis
from rq import Queue

from core.db import Database
from core.settings import Settings
from core.storage import ImageStore
from frontend.uploads import Limits
from worker import jobs


@dataclass
class Services:
    settings: Settings
    db: Database
    store: ImageStore
    redis: Redis

    @classmethod
    def from_settings(cls, settings: Settings) -> Services:
        return cls(settings=settings, db=Database(settings.database_url),
                   store=ImageStore(settings.upload_dir), redis=jobs.connect(settings))

    @cached_property
    def queue(self) -> Queue:
        return jobs.queue(self.settings, self.redis)

    @cached_property
    def limits(self) -> Limits:
        s = self.settings
        return Limits(image_bytes=s.max_image_bytes, pixels=s.max_image_pixels,
                      batch_images=s.max_batch_images, archive_bytes=s.max_request_bytes)


def services() -> Services:
    return current_app.extensions["classifier"]
