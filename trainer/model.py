"""The classifier, top to bottom: pixels -> [-1, 1] -> MobileNetV2 -> pooled
features -> dropout -> softmax.

The model is two parts on purpose. While the backbone is frozen its pooled
features never change, so `fit.py` computes them once and trains only the head;
`join` then puts the same layer objects back together for fine-tuning and export.
"""

from __future__ import annotations

from pathlib import Path

import keras
from keras import layers

from trainer.errors import WeightsError
from trainer.images import IMAGE_SHAPE

NUM_FEATURES = 1280  # MobileNetV2 alpha 1.0, after global average pooling


def _load_backbone(weights: str) -> keras.Model:
    """MobileNetV2 with Keras's own weight loading: "imagenet" (Keras's cache,
    downloaded if missing), "none" (random, only when asked), or a .h5 path."""
    if weights not in ("imagenet", "none") and not Path(weights).is_file():
        raise WeightsError(f"weights file {weights} does not exist: give an existing .h5 file, "
                           "'imagenet' or 'none'")
    try:
        return keras.applications.MobileNetV2(
            input_shape=IMAGE_SHAPE,
            alpha=1.0,
            include_top=False,
            weights=None if weights == "none" else weights,
            pooling="avg",
        )
    except Exception as exc:  # download failures and bad files surface as many types
        if weights == "imagenet":
            raise WeightsError(
                "ImageNet weights are not in the Keras cache and could not be downloaded "
                f"({type(exc).__name__}); copy mobilenet_v2_weights_tf_dim_ordering_tf_kernels_"
                "1.0_224_no_top.h5 into $KERAS_HOME/models/ (default ~/.keras/models/) "
                "or pass --weights PATH"
            ) from exc
        raise WeightsError(f"cannot load weights from {weights}: {exc}") from exc


def build_base(weights: str = "imagenet") -> keras.Model:
    """Pixels in [0, 255] -> 1280 pooled features, with the backbone frozen."""
    backbone = _load_backbone(weights)
    backbone.trainable = False
    inputs = keras.Input(IMAGE_SHAPE, name="image")
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="to_unit_range")(inputs)
    # training=False keeps BatchNorm in inference mode even when the top blocks
    # are unfrozen later, as the Keras fine-tuning guide advises.
    outputs = backbone(x, training=False)
    return keras.Model(inputs, outputs, name="features")


def build_head(num_classes: int, dropout: float, l2: float = 0.0) -> keras.Model:
    """Dropout and a softmax layer; `l2` penalises large weights, which keeps the
    head from leaning on the few features that tell the training photos apart."""
    inputs = keras.Input((NUM_FEATURES,), name="features")
    x = layers.Dropout(dropout, name="head_dropout")(inputs)
    outputs = layers.Dense(num_classes, activation="softmax", name="head_scores",
                           kernel_regularizer=keras.regularizers.L2(l2) if l2 else None)(x)
    return keras.Model(inputs, outputs, name="head")


def join(base: keras.Model, head: keras.Model) -> keras.Model:
    inputs = keras.Input(IMAGE_SHAPE, name="image")
    return keras.Model(inputs, head(base(inputs)), name="classifier")


def build_augmenter(*, flip: bool, rotation: float, zoom: float, contrast: float,
                    blur: float = 0.0, brightness: float = 0.0,
                    seed: int) -> keras.Sequential:
    """Random changes a photo can undergo without changing its class; blur (the
    largest Gaussian sigma) and brightness mimic worse cameras and light."""
    steps: list[layers.Layer] = []
    if flip:
        steps.append(layers.RandomFlip("horizontal", seed=seed))
    if rotation:
        steps.append(layers.RandomRotation(rotation, fill_mode="reflect", seed=seed + 1))
    if zoom:
        steps.append(layers.RandomZoom((-zoom, zoom), fill_mode="reflect", seed=seed + 2))
    if contrast:
        steps.append(layers.RandomContrast(contrast, value_range=(0, 255), seed=seed + 3))
    if brightness:
        steps.append(layers.RandomBrightness(brightness, value_range=(0, 255), seed=seed + 4))
    if blur:
        steps.append(layers.RandomGaussianBlur(1.0, kernel_size=9, sigma=(0.01, blur),
                                               value_range=(0, 255), seed=seed + 5))
    return keras.Sequential(steps, name="augment")


def unfreeze_top(base: keras.Model, num_layers: int) -> None:
    """Make the last `num_layers` backbone layers trainable, BatchNorm excepted:
    its statistics were learned on ImageNet and a few hundred photos would spoil them."""
    backbone = base.get_layer("mobilenetv2_1.00_224")
    backbone.trainable = True
    for layer in backbone.layers[:-num_layers]:
        layer.trainable = False
    for layer in backbone.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.trainable = False
