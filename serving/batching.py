"""Dynamic batching: concurrent requests to one signature merged into one model call.

This follows TF Serving's shared batch scheduler and its BatchingParameters:
every (model, version, signature) has its own queue of batches; a fixed pool
of `num_batch_threads` threads runs the batches of all queues, round robin. A
request joins the newest open batch while it fits in `max_batch_size`; a
batch is run once it is full, once `batch_timeout_micros` has passed since its
first request, or as soon as a thread is free when the timeout is 0. More
than `max_enqueued_batches` waiting batches is overload: the request is
refused with UNAVAILABLE (HTTP 503) rather than left to time out.

Merging has one risk TF Serving leaves open: one bad request (say, bytes that
are not an image) fails the whole model call. Here a batch that fails with
INVALID_ARGUMENT is split in halves and each half re-run, recursively, so only
the culprit fails, at the cost of about 2·log2(batch) extra calls.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future

import numpy as np

from serving.config import BatchingOptions
from serving.errors import Code, ServingError, invalid_argument, unavailable

log = logging.getLogger(__name__)

#: Named arrays sharing a first (batch) dimension: a signature's inputs or outputs.
Tensors = dict[str, np.ndarray]
RunFn = Callable[[Tensors], Tensors]
#: Called after every model call with the queue's labels, the batch size and
#: how long each request waited in the queue (seconds).
BatchObserver = Callable[[dict[str, str], int, list[float]], None]


class _Task:
    __slots__ = ("inputs", "size", "future", "enqueued")

    def __init__(self, inputs: Tensors, size: int):
        self.inputs = inputs
        self.size = size
        self.future: Future[Tensors] = Future()
        self.enqueued = time.monotonic()


class _Batch:
    __slots__ = ("tasks", "size", "opened")

    def __init__(self) -> None:
        self.tasks: list[_Task] = []
        self.size = 0
        self.opened = time.monotonic()

    def add(self, task: _Task) -> None:
        self.tasks.append(task)
        self.size += task.size


class BatchQueue:
    """The queue of one signature of one model version."""

    def __init__(self, scheduler: BatchScheduler, labels: dict[str, str], run: RunFn):
        self.scheduler = scheduler
        self.labels = labels
        self.run = run
        self.batches: deque[_Batch] = deque()

    def submit(self, inputs: Tensors, size: int) -> Tensors:
        """Blocks until the batch holding this request has run."""
        task = _Task(inputs, size)
        self.scheduler._enqueue(self, task)
        return task.future.result()

    def close(self) -> None:
        """Called when the version is unloaded; its requests have all finished."""
        self.scheduler._remove(self)


class BatchScheduler:
    def __init__(self, options: BatchingOptions, observe: BatchObserver | None = None):
        self.options = options
        self._observe = observe
        self._cond = threading.Condition()
        self._queues: list[BatchQueue] = []
        self._turn = 0
        self._stopping = False
        self._threads = [
            threading.Thread(target=self._work, name=f"batch-{i}", daemon=True)
            for i in range(options.num_batch_threads)
        ]
        for thread in self._threads:
            thread.start()

    def queue(self, labels: dict[str, str], run: RunFn) -> BatchQueue:
        queue = BatchQueue(self, labels, run)
        with self._cond:
            self._queues.append(queue)
        return queue

    def stop(self) -> None:
        """Run what is queued, then stop the threads."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join()

    def _remove(self, queue: BatchQueue) -> None:
        with self._cond:
            if queue in self._queues:
                self._queues.remove(queue)

    def _enqueue(self, queue: BatchQueue, task: _Task) -> None:
        limit = self.options.max_batch_size
        if task.size > limit:
            raise invalid_argument(
                f"Task size {task.size} is larger than maximum batch size {limit}: "
                f"send at most {limit} examples per request")
        with self._cond:
            if self._stopping:
                raise unavailable("The server is shutting down")
            batches = queue.batches
            if not batches or batches[-1].size + task.size > limit:
                if len(batches) >= self.options.max_enqueued_batches:
                    raise unavailable(
                        "The batch scheduling queue to which this task was submitted is full")
                batches.append(_Batch())
            batches[-1].add(task)
            self._cond.notify()

    def _next_batch(self) -> tuple[BatchQueue, _Batch] | None:
        timeout = self.options.batch_timeout_micros / 1e6
        with self._cond:
            while True:
                now = time.monotonic()
                wait: float | None = None
                count = len(self._queues)
                for i in range(count):
                    queue = self._queues[(self._turn + i) % count]
                    if not queue.batches:
                        continue
                    batch = queue.batches[0]
                    ready_at = batch.opened + timeout
                    if (len(queue.batches) > 1 or batch.size >= self.options.max_batch_size
                            or now >= ready_at or self._stopping):
                        queue.batches.popleft()
                        self._turn = (self._turn + i + 1) % count
                        return queue, batch
                    wait = ready_at - now if wait is None else min(wait, ready_at - now)
                if self._stopping:
                    return None
                self._cond.wait(wait)

    def _work(self) -> None:
        while (item := self._next_batch()) is not None:
            queue, batch = item
            started = time.monotonic()
            self._run(queue, batch.tasks)
            if self._observe is not None:
                try:
                    self._observe(queue.labels, batch.size,
                                  [started - t.enqueued for t in batch.tasks])
                except Exception:  # metrics must never stop the batch thread
                    log.exception("batch observer failed")

    def _run(self, queue: BatchQueue, tasks: list[_Task]) -> None:
        try:
            if len(tasks) == 1:
                tasks[0].future.set_result(queue.run(tasks[0].inputs))
                return
            try:
                merged = {key: np.concatenate([t.inputs[key] for t in tasks])
                          for key in tasks[0].inputs}
            except ValueError:  # shapes that do not stack: run them in smaller groups
                return self._run_halves(queue, tasks)
            outputs = queue.run(merged)
            total, start, results = sum(t.size for t in tasks), 0, []
            for task in tasks:
                results.append(_slice(outputs, start, task.size, total))
                start += task.size
            for task, result in zip(tasks, results, strict=True):
                task.future.set_result(result)
        except ServingError as error:
            if error.code == Code.INVALID_ARGUMENT and len(tasks) > 1:
                return self._run_halves(queue, tasks)
            for task in tasks:
                task.future.set_exception(error)
        except Exception as error:  # never leave a request waiting forever
            log.exception("batch of %d failed", len(tasks))
            for task in tasks:
                if not task.future.done():
                    task.future.set_exception(ServingError(Code.INTERNAL, str(error)))

    def _run_halves(self, queue: BatchQueue, tasks: list[_Task]) -> None:
        half = len(tasks) // 2
        self._run(queue, tasks[:half])
        self._run(queue, tasks[half:])


def _slice(outputs: Tensors, start: int, size: int, total: int) -> Tensors:
    sliced = {}
    for key, value in outputs.items():
        if value.ndim == 0 or value.shape[0] != total:
            raise ServingError(Code.INTERNAL,
                               f"output {key!r} has no batch dimension of size {total}; "
                               "this model cannot be served with --enable_batching")
        sliced[key] = value[start:start + size]
    return sliced
