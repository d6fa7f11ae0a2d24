"""The batch scheduler on its own: merging, limits, overload and isolation."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from serving.batching import BatchScheduler
from serving.config import BatchingOptions
from serving.errors import Code, ServingError, invalid_argument

LABELS = {"model_name": "m", "version": "1", "signature": "serving_default"}


class Model:
    """Doubles its input; refuses negative numbers like a model refuses a bad image."""

    def __init__(self, seconds: float = 0.0):
        self.seconds = seconds
        self.calls: list[int] = []

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = inputs["x"]
        self.calls.append(len(x))
        time.sleep(self.seconds)
        if (x < 0).any():
            raise invalid_argument("negative input")
        return {"y": x * 2}


def submit_concurrently(queue, values: list[float]) -> dict[float, object]:
    results: dict[float, object] = {}

    def one(value: float) -> None:
        try:
            results[value] = queue.submit({"x": np.array([value])}, 1)["y"][0]
        except ServingError as error:
            results[value] = error.code

    threads = [threading.Thread(target=one, args=(v,)) for v in values]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_concurrent_requests_share_one_model_call_and_get_their_own_rows():
    scheduler = BatchScheduler(BatchingOptions(max_batch_size=8, batch_timeout_micros=200_000,
                                               num_batch_threads=1))
    model = Model()
    results = submit_concurrently(scheduler.queue(LABELS, model), [1.0, 2.0, 3.0, 4.0])
    scheduler.stop()
    assert results == {1.0: 2.0, 2.0: 4.0, 3.0: 6.0, 4.0: 8.0}
    assert model.calls == [4]


def test_with_no_timeout_requests_arriving_during_a_call_join_the_next_one():
    # The shipped serving/batching.config: timeout 0, one batch thread.
    scheduler = BatchScheduler(BatchingOptions(max_batch_size=32, batch_timeout_micros=0,
                                               num_batch_threads=1))
    model = Model(seconds=0.5)
    queue = scheduler.queue(LABELS, model)
    first = threading.Thread(target=submit_concurrently, args=(queue, [1.0]))
    first.start()
    time.sleep(0.2)  # the first call is running now
    results = submit_concurrently(queue, [2.0, 3.0, 4.0, 5.0])
    first.join()
    scheduler.stop()
    assert results == {2.0: 4.0, 3.0: 6.0, 4.0: 8.0, 5.0: 10.0}
    assert model.calls == [1, 4]


def test_a_full_batch_runs_without_waiting_for_the_timeout():
    scheduler = BatchScheduler(BatchingOptions(max_batch_size=2, batch_timeout_micros=10_000_000,
                                               num_batch_threads=1))
    model = Model()
    started = time.monotonic()
    submit_concurrently(scheduler.queue(LABELS, model), [1.0, 2.0])
    assert time.monotonic() - started < 5
    scheduler.stop()
    assert model.calls == [2]


def test_a_failing_request_fails_alone():
    scheduler = BatchScheduler(BatchingOptions(max_batch_size=8, batch_timeout_micros=200_000,
                                               num_batch_threads=1))
    model = Model()
    results = submit_concurrently(scheduler.queue(LABELS, model), [1.0, -1.0, 3.0])
    scheduler.stop()
    assert results == {1.0: 2.0, -1.0: Code.INVALID_ARGUMENT, 3.0: 6.0}
    assert model.calls[0] == 3


def test_a_failing_request_is_found_by_halving_not_one_call_per_request():
    scheduler = BatchScheduler(BatchingOptions(max_batch_size=16, batch_timeout_micros=300_000,
                                               num_batch_threads=1))
    model = Model()
    values = [float(v) for v in range(1, 16)] + [-1.0]
    results = submit_concurrently(scheduler.queue(LABELS, model), values)
    scheduler.stop()
    assert results[-1.0] == Code.INVALID_ARGUMENT
    assert all(results[v] == 2 * v for v in values if v > 0)
    assert model.calls[0] == 16
    assert len(model.calls) <= 1 + 2 * 4  # halving 16 down to 1: two calls per level


def test_requests_larger_than_a_batch_are_refused():
    scheduler = BatchScheduler(BatchingOptions(max_batch_size=4, num_batch_threads=1))
    queue = scheduler.queue(LABELS, Model())
    with pytest.raises(ServingError) as raised:
        queue.submit({"x": np.zeros(5)}, 5)
    scheduler.stop()
    assert raised.value.code == Code.INVALID_ARGUMENT
    assert "Task size 5 is larger than maximum batch size 4" in raised.value.message


def test_overload_is_refused_with_unavailable_not_queued_forever():
    scheduler = BatchScheduler(BatchingOptions(max_batch_size=1, max_enqueued_batches=2,
                                               num_batch_threads=1))
    results = submit_concurrently(scheduler.queue(LABELS, Model(seconds=0.3)),
                                  [float(v) for v in range(8)])
    scheduler.stop()
    outcomes = list(results.values())
    assert outcomes.count(Code.UNAVAILABLE) >= 4
    assert 1 <= sum(isinstance(o, float) for o in outcomes) <= 4


def test_observer_sees_batch_sizes_and_waits():
    seen: list[tuple[int, int]] = []
    scheduler = BatchScheduler(
        BatchingOptions(max_batch_size=8, batch_timeout_micros=100_000, num_batch_threads=1),
        observe=lambda labels, size, waits: seen.append((size, len(waits))))
    submit_concurrently(scheduler.queue(LABELS, Model()), [1.0, 2.0, 3.0])
    scheduler.stop()
    assert seen == [(3, 3)]
