"""Versioned SavedModels for TensorFlow Serving, and TFLite files for phones.

Layout, as TF Serving expects it under `--model_base_path=<base>/<name>`:

    <base>/<name>/<version>/          SavedModel; TF Serving owns this folder
    <base>/<name>/reports/<version>/  metrics, plots, split lists, .tflite files

A version is written under a hidden staging name and renamed into place only
when complete and checked, so a server polling the folder never sees half a
version. TF Serving ignores folder names that are not numbers.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2
from tqdm import tqdm

from core.contract import CLASSES, INPUT, SCORES, SIGNATURE, WARMUP_FILE, version_folders
from core.model_files import CANDIDATES, REPORTS
from trainer import report
from trainer.data import Split
from trainer.errors import OutputError
from trainer.images import IMAGE_SHAPE, decode_and_resize, decode_batch


def ensure_writable(model_dir: Path) -> None:
    """Fail before hours of training, not after, if the output cannot be written."""
    try:
        model_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=model_dir, prefix=".probe-"):
            pass
    except OSError as exc:
        raise OutputError(
            f"cannot write to {model_dir} ({exc.strerror or exc}): choose another --out "
            "or make the folder writable"
        ) from exc


def versions(model_dir: Path) -> list[int]:
    """Version numbers present, as TF Serving reads them."""
    return sorted(version_folders(model_dir))


def reserve_version(model_dir: Path) -> tuple[int, Path]:
    """Claim the next version number by creating its report folder.

    mkdir is atomic, so two trainers writing into the same model never pick the
    same number; candidates have reports too, so their numbers are never reused
    for a served version. A failed run's number is free again once its report
    folder is gone.
    """
    reports = model_dir / REPORTS
    reports.mkdir(parents=True, exist_ok=True)
    while True:
        taken = versions(model_dir) + versions(reports) + versions(model_dir / CANDIDATES)
        version = max(taken, default=0) + 1
        try:
            (reports / str(version)).mkdir()
        except FileExistsError:
            continue
        return version, reports / str(version)


def serving_function(model: keras.Model, class_names: Sequence[str]):
    """Encoded image files in, class probabilities and class names out.

    The names are those of TensorFlow's classification signatures; the class
    names travel inside the model, so a client never needs a separate label file.
    """
    classes = tf.constant(list(class_names))

    def serve(encoded: tf.Tensor) -> dict[str, tf.Tensor]:
        scores = model(decode_batch(encoded), training=False)
        batch = tf.shape(scores)[0]
        return {SCORES: scores, CLASSES: tf.tile(classes[tf.newaxis], [batch, 1])}

    return serve


def write_saved_model(model: keras.Model, class_names: Sequence[str], path: Path) -> None:
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name=SIGNATURE,
        fn=serving_function(model, class_names),
        input_signature=[tf.TensorSpec([None], tf.string, name=INPUT)],
    )
    archive.write_out(str(path), verbose=False)


WARMUP_BATCH_SIZES = (1, 8)


def write_warmup_requests(saved_model_dir: Path, model_name: str,
                          images: Sequence[bytes]) -> None:
    """Real requests TF Serving (and our embedded server) replay before serving.

    Without them the first user request after a rollout pays for TensorFlow's
    graph and kernel set-up (seconds, not milliseconds). One request per batch
    size in WARMUP_BATCH_SIZES, made of test photos.
    """
    path = saved_model_dir / WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for size in WARMUP_BATCH_SIZES:
            batch = [images[i % len(images)] for i in range(size)]
            request = predict_pb2.PredictRequest()
            request.model_spec.name = model_name
            request.model_spec.signature_name = SIGNATURE
            request.inputs[INPUT].CopyFrom(tf.make_tensor_proto(batch, dtype=tf.string))
            entry = prediction_log_pb2.PredictionLog()
            entry.predict_log.request.CopyFrom(request)
            writer.write(entry.SerializeToString())


def predict_bytes(saved_model_dir: Path, images: Sequence[bytes],
                  batch_size: int = 32) -> tuple[np.ndarray, list[str]]:
    """Scores [N, C] and class names from an exported version, through its signature."""
    serve = tf.saved_model.load(str(saved_model_dir)).signatures[SIGNATURE]
    scores, names = [], None
    for start in range(0, len(images), batch_size):
        out = serve(**{INPUT: tf.constant(list(images[start:start + batch_size]))})
        scores.append(out[SCORES].numpy())
        names = [c.decode() for c in out[CLASSES].numpy()[0]]
    return np.concatenate(scores), names or []


def verify(saved_model_dir: Path, expected: np.ndarray, class_names: Sequence[str],
           images: Sequence[bytes]) -> np.ndarray:
    """The export must answer as the trained model did before Serving may see it.

    `expected` are the trained model's scores for `images`; returns the export's.
    """
    served, names = predict_bytes(saved_model_dir, images)
    if names != list(class_names) or not np.allclose(served, expected, atol=1e-3):
        raise RuntimeError(f"exported model at {saved_model_dir} disagrees with the trained one")
    return served


def discard(*paths: Path) -> None:
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)


def size_on_disk(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def tflite_model(model: keras.Model, quantization: str,
                 representative: np.ndarray | None = None) -> bytes:
    """A TFLite flatbuffer taking decoded pixels [1, 224, 224, 3] in [0, 255].

    float32 keeps the trained weights; float16 halves the file at no measurable
    accuracy cost; int8 quantizes weights and activations, calibrated on training
    photos, for integer-only hardware.
    Inputs and outputs stay float32 so that an app feeds both files the same way.
    """
    with tempfile.TemporaryDirectory() as pixels_model:
        # The converter freezes Keras 3 variables only when given a SavedModel.
        model.export(pixels_model, format="tf_saved_model", verbose=False,
                     input_signature=[tf.TensorSpec([1, *IMAGE_SHAPE], tf.float32)])
        converter = tf.lite.TFLiteConverter.from_saved_model(pixels_model)
        return _convert(converter, quantization, representative)


def _convert(converter: tf.lite.TFLiteConverter, quantization: str,
             representative: np.ndarray | None) -> bytes:
    if quantization != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float32":
        pass  # the weights as trained
    elif quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "int8":
        if representative is None:
            raise ValueError("int8 quantization needs representative images")
        converter.representative_dataset = lambda: ([image[np.newaxis]] for image in representative)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    else:
        raise ValueError(f"unknown quantization {quantization!r}")
    return converter.convert()


def tflite_predict(flatbuffer: bytes, pixels: np.ndarray) -> np.ndarray:
    """Scores [N, C] of decoded pixels through LiteRT, the runtime the embedded
    server runs the file with."""
    interpreter = Interpreter(model_content=flatbuffer)
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    scores = []
    for image in pixels:
        interpreter.set_tensor(inp["index"], image[np.newaxis].astype(np.float32))
        interpreter.invoke()
        scores.append(interpreter.get_tensor(out["index"])[0])
    return np.stack(scores)


def calibration_pixels(parts: Split) -> np.ndarray:
    """What int8 quantization calibrates on: the first 100 training photos."""
    return np.stack([decode_and_resize(e.path.read_bytes()).numpy() for e in parts.train[:100]])


def tflite_files(model: keras.Model, parts: Split, test_labels: np.ndarray,
                 report_dir: Path) -> dict[str, dict]:
    """float16 and int8 TFLite files beside the report, with size and test accuracy."""
    test_pixels = np.stack([decode_and_resize(e.path.read_bytes()).numpy() for e in parts.test])
    calibration = calibration_pixels(parts)
    files = {}
    for quantization in tqdm(("float16", "int8"), desc="TFLite export", unit="file"):
        flatbuffer = tflite_model(model, quantization, calibration)
        path = report_dir / f"model_{quantization}.tflite"
        path.write_bytes(flatbuffer)
        scores = tflite_predict(flatbuffer, test_pixels)
        files[f"tflite_{quantization}"] = {
            "path": str(path.relative_to(report_dir.parent.parent)),
            "bytes": len(flatbuffer),
            "test_accuracy": report.scores_summary(test_labels, scores)["accuracy"],
        }
    return files
