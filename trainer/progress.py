"""How a training run tells its caller what it is doing.

`train()` reports to an object with `phase(phase, fraction)` and
`reserved(version)`. The trainer worker's reporter writes them to the run's
row and raises when a cancel was asked for: an exception from either method
aborts training, and `train()` then removes what it had written. The command
line passes nothing and gets `Silent`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import keras

from core.training import Phase


class Progress(Protocol):
    def phase(self, phase: Phase, fraction: float) -> None: ...

    def reserved(self, version: int) -> None: ...


class Silent:
    """Reports nowhere: tqdm's bars already show the command line's progress."""

    def phase(self, phase: Phase, fraction: float) -> None:
        pass

    def reserved(self, version: int) -> None:
        pass


class Shares:
    """Fractions of one phase made of several passes of known sizes (feature
    passes of so many photos), so the phase's bar moves steadily across them."""

    def __init__(self, progress: Progress, phase: Phase, sizes: list[int]):
        self.progress, self.phase, self.sizes = progress, phase, sizes
        self.total = max(sum(sizes), 1)

    def of(self, index: int) -> Callable[[float], None]:
        done = sum(self.sizes[:index])
        size = self.sizes[index]
        return lambda fraction: self.progress.phase(self.phase,
                                                    (done + fraction * size) / self.total)


class EpochProgress(keras.callbacks.Callback):
    """The head's epochs as the HEAD phase's fraction (early stopping ends it
    before the last epoch; the phase after it says so)."""

    def __init__(self, progress: Progress, epochs: int):
        super().__init__()
        self.progress, self.epochs = progress, epochs

    def on_epoch_end(self, epoch, logs=None):
        self.progress.phase(Phase.HEAD, (epoch + 1) / self.epochs)
