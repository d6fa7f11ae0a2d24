"""Training loops: the fast path on cached features, optional fine-tuning, and
the plain `model.fit` over images that the benchmark compares it with."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from trainer.data import Example
from trainer.images import decode_and_resize, load_file

AUTOTUNE = tf.data.AUTOTUNE


class EpochBar(keras.callbacks.Callback):
    """One tqdm bar over epochs instead of Keras's line per epoch."""

    def __init__(self, epochs: int, desc: str):
        super().__init__()
        self.bar = tqdm(total=epochs, desc=desc, unit="epoch")

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self.bar.set_postfix({k: f"{v:.3f}" for k, v in logs.items() if "loss" in k or "acc" in k})
        self.bar.update()

    def on_train_end(self, logs=None):
        self.bar.close()


def image_dataset(images: Sequence[Example] | Sequence[bytes], batch_size: int,
                  augmenter: keras.Model | None = None, shuffle_seed: int | None = None,
                  with_labels: bool = False, cache: bool = False) -> tf.data.Dataset:
    """Decoded (and optionally augmented) batches from image files or encoded bytes."""
    if images and isinstance(images[0], bytes):
        ds = tf.data.Dataset.from_tensor_slices((list(images), [0] * len(images)))
        decode = decode_and_resize
    else:
        pairs = ([str(e.path) for e in images], [e.label for e in images])
        ds = tf.data.Dataset.from_tensor_slices(pairs)
        decode = load_file
    ds = ds.map(lambda x, y: (decode(x), y), num_parallel_calls=AUTOTUNE)
    if cache:
        ds = ds.cache()
    if shuffle_seed is not None:
        ds = ds.shuffle(len(images), seed=shuffle_seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if augmenter is not None:
        ds = ds.map(lambda x, y: (augmenter(x, training=True), y), num_parallel_calls=AUTOTUNE)
    if not with_labels:
        ds = ds.map(lambda x, y: x)
    return ds.prefetch(AUTOTUNE)


#: Photos decoded (and augmented) ahead of the base: about 300 MB of pixels.
CHUNK = 512


def extract_features(base: keras.Model, images: Sequence[Example] | Sequence[bytes], *,
                     desc: str, augmenter: keras.Model | None = None,
                     batch_size: int = 32,
                     progress: Callable[[float], None] | None = None) -> np.ndarray:
    """Run the frozen base once over `images` (optionally augmented): [N, 1280].

    Each chunk is decoded and augmented in full before the base runs on it:
    letting tf.data work ahead while the base runs made this up to twice as
    slow, at random, on 2 cores (measured: 5 s or 10 s for the same 421 photos).
    """
    batches = []
    with tqdm(total=len(images), desc=desc, unit="img") as bar:
        for start in range(0, len(images), CHUNK):
            pixels = list(image_dataset(images[start:start + CHUNK], batch_size, augmenter))
            for x in pixels:
                batches.append(base.predict_on_batch(x))
                bar.update(len(x))
                if progress is not None:
                    progress(bar.n / len(images))
    return np.concatenate(batches).astype(np.float32)


def compile_for_training(model: keras.Model, learning_rate: float,
                         label_smoothing: float = 0.0, steps_per_execution: int = 1) -> None:
    """Labels are class indices; with label smoothing the loss takes one-hot
    targets, so `one_hot` turns the datasets' labels into them."""
    loss = (keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)
            if label_smoothing else "sparse_categorical_crossentropy")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss,
                  metrics=["accuracy"], steps_per_execution=steps_per_execution)


def fit_head(head: keras.Model, train: tuple[np.ndarray, np.ndarray],
             val: tuple[np.ndarray, np.ndarray] | None, *, epochs: int, learning_rate: float,
             patience: int | None, batch_size: int, seed: int, label_smoothing: float = 0.0,
             callbacks: Sequence[keras.callbacks.Callback] = ()) -> dict[str, list[float]]:
    """Train the head on cached features, stopping early on validation loss and
    keeping the best epoch's weights; with no `val` (or no `patience`) it runs
    all `epochs` (the gate's folds, which reuse the candidate's epoch count)."""
    keras.utils.set_random_seed(seed)
    compile_for_training(head, learning_rate, label_smoothing, steps_per_execution=64)
    if label_smoothing:
        one_hot = np.eye(head.output_shape[-1], dtype=np.float32)
        train = (train[0], one_hot[train[1]])
        val = None if val is None else (val[0], one_hot[val[1]])
    extra: list[keras.callbacks.Callback] = []
    if val is not None and patience is not None:
        extra.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience,
                                                   restore_best_weights=True))
    # Datasets cached in memory: Keras re-wraps NumPy arrays every epoch, which
    # costs more than an epoch of the head itself.
    train_ds = (tf.data.Dataset.from_tensor_slices(train).cache()
                .shuffle(len(train[1]), seed=seed).batch(batch_size).prefetch(AUTOTUNE))
    val_ds = None if val is None else tf.data.Dataset.from_tensor_slices(val).cache().batch(256)
    history = head.fit(train_ds, validation_data=val_ds, epochs=epochs, verbose=0,
                       shuffle=False,  # the dataset shuffles itself
                       callbacks=[*extra, EpochBar(epochs, "training head"), *callbacks])
    return history.history


def fit_images(model: keras.Model, train: Sequence[Example], val: Sequence[Example], *,
               augmenter: keras.Model | None, epochs: int, learning_rate: float,
               batch_size: int, seed: int, patience: int | None,
               desc: str) -> dict[str, list[float]]:
    """`model.fit` over decoded images: fine-tuning, and the reference recipe
    that runs the whole base every epoch."""
    keras.utils.set_random_seed(seed)
    compile_for_training(model, learning_rate)
    train_ds = image_dataset(train, batch_size, augmenter, shuffle_seed=seed, with_labels=True,
                             cache=True)
    val_ds = image_dataset(val, batch_size, with_labels=True, cache=True)
    callbacks: list[keras.callbacks.Callback] = [EpochBar(epochs, desc)]
    if patience is not None:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=patience, restore_best_weights=True))
    history = model.fit(train_ds, validation_data=val_ds, epochs=epochs, verbose=0,
                        shuffle=False, callbacks=callbacks)  # the dataset shuffles itself
    return history.history
