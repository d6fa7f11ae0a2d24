"""One served model and its versions, as the manager keeps them, and a version
held by a request.

State mirrors TF Serving's ModelVersionStatus.State; a Model's lock guards
its versions and their states, and is notified when requests finish or loads
end (see serving/manager.py for the life cycle they go through).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path

import numpy as np
from tensorflow_serving.config.model_server_config_pb2 import ModelConfig

from serving import versions
from serving.batching import BatchQueue, BatchScheduler
from serving.errors import ServingError, not_found
from serving.servable import Servable


class State(IntEnum):
    """ModelVersionStatus.State, by value."""

    START = 10
    LOADING = 20
    AVAILABLE = 30
    UNLOADING = 40
    END = 50


@dataclass
class Version:
    number: int
    path: Path
    state: State = State.START
    error: ServingError | None = None
    #: The files a failed load saw; the load is retried once they change.
    failed_files: versions.Fingerprint | None = None
    servable: Servable | None = None
    in_flight: int = 0
    queues: dict[str, BatchQueue] = field(default_factory=dict)


@dataclass(frozen=True)
class VersionStatus:
    version: int
    state: State
    error: ServingError | None


class Model:
    def __init__(self, config: ModelConfig, root: Path):
        self.config = config
        self.root = root
        self.versions: dict[int, Version] = {}
        #: Guards versions and their states; notified when requests finish or loads end.
        self.lock = threading.Condition()
        #: One reconcile at a time, each acting on its own fresh folder listing.
        self.reconciling = threading.Lock()
        self.retired = False

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def base_path(self) -> Path:
        """The config's absolute base path, found under the server's root folder."""
        return self.root / self.config.base_path.lstrip("/")

    def describe(self, version: int) -> str:
        return f"{{name: {self.name} version: {version}}}"

    def labelled(self, label: str) -> int:
        """The version a label of the config points at."""
        number = self.config.version_labels.get(label)
        if number is None:
            raise not_found(f"Unrecognized servable version label: {label}")
        return number


class Handle:
    """A version held for the length of one request."""

    def __init__(self, scheduler: BatchScheduler | None, model: Model, version: Version):
        self._scheduler = scheduler
        self.model = model
        self.version = version
        self.servable: Servable = version.servable  # type: ignore[assignment]

    def predict(self, signature: str, inputs: dict[str, np.ndarray],
                size: int | None) -> dict[str, np.ndarray]:
        """Runs the signature, through the batch queue when batching is on.

        `size` is the batch dimension shared by all inputs, None when they have
        none (scalars, mismatched columns): such requests cannot be merged.
        """
        scheduler = self._scheduler
        if scheduler is None or size is None:
            return self.servable.run(signature, inputs)
        with self.model.lock:
            queue = self.version.queues.get(signature)
            if queue is None:
                labels = {"model_name": self.model.name, "version": str(self.version.number),
                          "signature": signature}
                queue = scheduler.queue(
                    labels, lambda batch: self.servable.run(signature, batch))
                self.version.queues[signature] = queue
        return queue.submit(inputs, size)
