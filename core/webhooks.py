"""Signed JSON events for a receiver of the operator's choosing (WEBHOOK_URL):
"training_run.finished", "canary.rolled_back" and "drift.alert".

The process with the news only enqueues the delivery, an RQ job on the single
uploads' queue that the prediction workers run: a training run, the guard or the
drift check never waits on the receiver, and a receiver that is down or answers
an error is tried again by RQ's own retry (RETRY_INTERVALS). The event's body is
made once, when it is enqueued, so every attempt sends the same `id` (receivers
drop duplicates by it); each attempt signs it anew with its own timestamp, so a
late retry is not refused as stale.

The signature is HMAC-SHA256 with WEBHOOK_SECRET over "<timestamp>.<body>":
with the timestamp inside what is signed, a captured delivery replayed later
fails `verify`'s tolerance instead of passing as new.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
from datetime import UTC, datetime
from typing import Any

import requests
from redis import RedisError
from rq import Retry

from core.lifecycle.connections import Connections
from core.settings import get_settings

log = logging.getLogger(__name__)

#: The job function, by its import path: the prediction workers import core.
TASK = "core.webhooks.deliver"
EVENTS = ("training_run.finished", "canary.rolled_back", "drift.alert")
EVENT_HEADER = "X-Classifier-Event"
TIMESTAMP_HEADER = "X-Classifier-Timestamp"
SIGNATURE_HEADER = "X-Classifier-Signature"
#: Seconds between a failed delivery's retries: a receiver restarting takes
#: seconds, one being redeployed minutes; after the last the job stays in RQ's
#: failed registry (the statistics page counts it) for FAILED_TTL.
RETRY_INTERVALS = [3, 30, 120, 600]
FAILED_TTL = 7 * 86400
#: Seconds a receiver should accept a signature's timestamp either side of its clock.
TOLERANCE = 300


class DeliveryError(Exception):
    """The receiver could not be reached or did not answer 2xx: RQ retries the job."""


def notify(conns: Connections, event: str, data: dict[str, Any]) -> None:
    """Queues `event` for the webhook, if one is set; never raises, since the news
    (a finished run, a rollback) has happened whether or not it can be told."""
    settings = conns.settings.monitoring
    if not settings.webhook_url:
        return
    try:
        event_id = f"evt_{secrets.token_hex(12)}"
        body = json.dumps({"id": event_id, "event": event,
                           "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                           "data": data}, default=str, separators=(",", ":"))
        conns.queue.enqueue(TASK, event, body, job_id=f"webhook-{event_id}",
                            description=f"webhook {event}",
                            job_timeout=settings.webhook_timeout + 10,
                            retry=Retry(max=len(RETRY_INTERVALS), interval=RETRY_INTERVALS),
                            result_ttl=3600, failure_ttl=FAILED_TTL)
    except RedisError as exc:
        log.warning("webhook event %s not sent, Redis is unreachable: %s", event, exc)
    except Exception:  # a bad payload must not break what the caller was doing
        log.exception("webhook event %s not sent", event)


def sign(secret: str, timestamp: int | str, body: bytes | str) -> str:
    """The X-Classifier-Signature value of `body` sent at `timestamp` (unix seconds)."""
    raw = body.encode() if isinstance(body, str) else body
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + raw, hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


def verify(secret: str, timestamp: str | int | None, body: bytes | str,
           signature: str | None, *, tolerance: float = TOLERANCE,
           now: float | None = None) -> bool:
    """For receivers: whether `body` (the raw bytes received) was signed with
    `secret` at `timestamp` (X-Classifier-Timestamp), no more than `tolerance`
    seconds from now. Compared in constant time, so the signature cannot be
    guessed byte by byte from response times."""
    if not secret or not signature or timestamp is None:
        return False
    try:
        sent = int(timestamp)
    except (TypeError, ValueError):
        return False
    if abs((time.time() if now is None else now) - sent) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, sent, body).encode(), str(signature).encode())


def deliver(event: str, body: str) -> int:
    """The RQ job: one signed POST of `body`; returns the receiver's status. Raises
    DeliveryError on anything but 2xx (redirects are not followed: the
    configured URL is the receiver), so that RQ tries again."""
    settings = get_settings().monitoring
    if not settings.webhook_url or not settings.webhook_secret:
        log.warning("webhook event %s dropped: WEBHOOK_URL is no longer set", event)
        return 0
    timestamp = int(time.time())
    headers = {"Content-Type": "application/json", EVENT_HEADER: event,
               TIMESTAMP_HEADER: str(timestamp),
               SIGNATURE_HEADER: sign(settings.webhook_secret, timestamp, body),
               "User-Agent": "image-classifier-webhooks"}
    try:
        response = requests.post(settings.webhook_url, data=body.encode(), headers=headers,
                                 timeout=settings.webhook_timeout, allow_redirects=False)
    except requests.RequestException as exc:
        # Only the kind of failure: the URL itself may hold the receiver's token.
        raise DeliveryError(f"webhook {event}: the receiver did not answer "
                            f"({type(exc).__name__})") from None
    if not 200 <= response.status_code < 300:
        raise DeliveryError(f"webhook {event}: the receiver answered HTTP "
                            f"{response.status_code}")
    return response.status_code
