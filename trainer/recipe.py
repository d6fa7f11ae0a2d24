"""Every knob of a training run, in one frozen object written into each report."""

from __future__ import annotations

from dataclasses import dataclass

from trainer import data
from trainer.model import build_augmenter


@dataclass(frozen=True)
class Recipe:
    """Every knob of a training run; all of it is written into the report.

    The defaults were picked with bench/shift.py by accuracy on photos from
    elsewhere and on held-out varieties (README, "Choosing the recipe").
    """

    seed: int = 42
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    min_per_class: int = data.MIN_IMAGES_PER_CLASS
    weights: str = "imagenet"
    augmented_views: int = 1  # a second gains one webstock photo and costs a quarter of the time
    flip: bool = True
    rotation: float = 0.0  # fraction of a full turn; costs the most, gained nothing measurable
    zoom: float = 0.15
    contrast: float = 0.2
    blur: float = 3.0  # largest Gaussian sigma, in pixels at 224 x 224
    brightness: float = 0.3  # brightness shift, as a fraction of the 0..255 range
    dropout: float = 0.2
    l2: float = 3e-3  # weight penalty on the head's softmax layer: +3 points on webstock
    label_smoothing: float = 0.0
    epochs: int = 100  # head epochs on cached features; early stopping ends most runs
    learning_rate: float = 3e-3
    patience: int = 10
    batch_size: int = 32  # images per backbone step
    head_batch_size: int = 128  # feature vectors per head step: a third of batch 32's time
    calibrate: bool = True  # temperature scaling on the validation split
    tflite: bool = True  # float16 and int8 TFLite files in the report
    accelerated: bool = True  # a checked pixels.tflite beside the SavedModel (accelerate.py)
    fine_tune: bool = False
    fine_tune_layers: int = 30  # the backbone's last layers: block_14 onwards
    fine_tune_epochs: int = 10
    fine_tune_learning_rate: float = 1e-5

    def augmentation(self) -> dict[str, float]:
        return {"flip": self.flip, "rotation": self.rotation, "zoom": self.zoom,
                "contrast": self.contrast, "blur": self.blur, "brightness": self.brightness}

    def augmenter(self, seed: int):
        return build_augmenter(**self.augmentation(), seed=seed)

    def view_seed(self, view: int) -> int:
        return self.seed + 10 * view

    def view_augmenter(self, view: int):
        """The augmenter that makes augmented view `view` of every photo."""
        return self.augmenter(self.view_seed(view))

    def view_name(self, view: int) -> str:
        """The feature cache's name for augmented view `view`: every parameter
        that changes its pixels."""
        settings = ",".join(f"{k}={v}" for k, v in self.augmentation().items())
        return f"augment:{settings}:seed={self.view_seed(view)}:view={view}"
