"""Turning encoded image files into model input, in one place.

Training, the exported serving signature and the embedded server's accelerated
backend all call these, so a photo sent to Serving is preprocessed exactly as
the training photos were; the pixel scaling to [-1, 1] is a layer of the model
itself.
"""

from __future__ import annotations

import tensorflow as tf

IMAGE_SIZE = 224
IMAGE_SHAPE = (IMAGE_SIZE, IMAGE_SIZE, 3)


def decode_and_resize(encoded: tf.Tensor) -> tf.Tensor:
    """Encoded JPEG/PNG/GIF/BMP/WebP bytes -> float32 [224, 224, 3] pixels in [0, 255].

    The whole picture is squeezed to the square rather than centre-cropped: a
    user's fruit is often off-centre, and cropping would cut it off. GIFs give
    their first frame. Antialiasing keeps large photos from aliasing when shrunk.
    """
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image = tf.image.resize(image, (IMAGE_SIZE, IMAGE_SIZE), antialias=True)
    image = tf.clip_by_value(image, 0.0, 255.0)
    return tf.ensure_shape(image, IMAGE_SHAPE)


def load_file(path: tf.Tensor) -> tf.Tensor:
    return decode_and_resize(tf.io.read_file(path))


def decode_batch(encoded: tf.Tensor) -> tf.Tensor:
    """[N] encoded files -> [N, 224, 224, 3] pixels, as the serving signature starts."""
    return tf.map_fn(decode_and_resize, encoded,
                     fn_output_signature=tf.TensorSpec(IMAGE_SHAPE, tf.float32))
