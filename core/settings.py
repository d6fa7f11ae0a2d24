"""One validated settings object, read from the environment by every process.

Defaults run the whole system from a checkout with no configuration; each can
be overridden by the environment variable of the same name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

#: The repository's root: relative defaults are resolved against it, not the
#: caller's working directory, so the commands work from anywhere.
ROOT = Path(__file__).resolve().parent.parent


def _path(name: str, default: str) -> Path:
    value = Path(os.environ.get(name) or default).expanduser()
    return value if value.is_absolute() else ROOT / value


@dataclass(frozen=True)
class Settings:
    #: Read-only material beside the checkout (weights, the fruit photos).
    shared_dir: Path
    #: The folder-per-class photos the trainer learns from.
    dataset_dir: Path
    #: TF Serving's model_base_path parent: models live in <base>/<name>/<version>/.
    model_base_path: Path
    model_name: str

    @classmethod
    def from_env(cls) -> Settings:
        shared = _path("SHARED_DIR", "../shared")
        return cls(
            shared_dir=shared,
            dataset_dir=_path("DATASET_DIR", "dataset"),
            model_base_path=_path("MODEL_BASE_PATH", "models"),
            model_name=os.environ.get("MODEL_NAME") or "classifier",
        )

    @property
    def fruits_dir(self) -> Path:
        """The reference data set: 5 classes of real fruit photos."""
        return self.shared_dir / "datasets" / "fruits"


def get_settings() -> Settings:
    return Settings.from_env()
