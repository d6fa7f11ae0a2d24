"""One loaded model version: its signatures, how to run them, how to warm it up.

The only module of the server that loads and runs a model. The SignatureDefs
are read from saved_model.pb itself, as TF Serving reads them, so metadata
answers and input checks see exactly what the exporter wrote, for TF1 and TF2
SavedModels alike.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
from tensorflow_serving.apis import prediction_log_pb2

from core.contract import INPUT, SIGNATURE, WARMUP_FILE
from serving.errors import Code, ServingError, invalid_argument

log = logging.getLogger(__name__)

SERVE_TAG = tf.saved_model.SERVING


@dataclass(frozen=True)
class TensorSpec:
    """An input as its SignatureDef declares it: None for unknown dims or rank."""

    dtype: tf.DType
    shape: tuple[int | None, ...] | None

    @classmethod
    def from_info(cls, info: meta_graph_pb2.TensorInfo) -> TensorSpec:
        dims = info.tensor_shape
        shape = None if dims.unknown_rank else tuple(
            None if d.size < 0 else d.size for d in dims.dim)
        return cls(tf.dtypes.as_dtype(info.dtype), shape)


class Servable:
    """A SavedModel loaded for serving. Thread-safe: requests call it concurrently."""

    def __init__(self, path: Path):
        self.path = path
        self.signature_defs = read_signature_defs(path)
        try:
            self._loaded = tf.saved_model.load(str(path), tags=[SERVE_TAG])
        except Exception as exc:  # TF raises many types for a corrupt model
            raise ServingError(Code.INVALID_ARGUMENT, f"cannot load {path}: {first_line(exc)}"
                               ) from exc
        self._functions = dict(self._loaded.signatures)
        #: Runs the default signature in place of the SavedModel (serving/accelerated.py).
        self.accelerator: Accelerator | None = None
        self.inputs = {
            name: {key: TensorSpec.from_info(info) for key, info in sig.inputs.items()}
            for name, sig in self.signature_defs.items()
        }

    def signature(self, name: str | None) -> str:
        """The signature a request names (default serving_default), if it exists."""
        name = name or SIGNATURE
        if name not in self._functions:
            raise invalid_argument(f'Serving signature name: "{name}" not found in signature def')
        return name

    @property
    def backend(self) -> str:
        """What runs the default signature: the SavedModel, or its accelerator."""
        return self.accelerator.name if self.accelerator is not None else "saved_model"

    def describe_backend(self) -> str:
        return self.accelerator.describe() if self.accelerator is not None else "its SavedModel"

    def run(self, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.accelerator is not None and signature == SIGNATURE and set(inputs) == {INPUT}:
            return self.accelerator.run(inputs)
        return self.run_saved_model(signature, inputs)

    def run_saved_model(self, signature: str, inputs: dict[str, np.ndarray]
                        ) -> dict[str, np.ndarray]:
        function = self._functions[signature]
        specs = self.inputs[signature]
        with tf_errors():
            tensors = {key: tf.constant(value, dtype=specs[key].dtype)
                       for key, value in inputs.items()}
            outputs = function(**tensors)
        return {key: value.numpy() for key, value in outputs.items()}

    def warmup_requests(self) -> list[tuple[str, dict[str, np.ndarray]]]:
        """The version's warm-up requests (WARMUP_FILE): (signature, inputs) each."""
        path = self.path / WARMUP_FILE
        if not path.exists():
            return []
        requests = []
        for record in tf.data.TFRecordDataset(str(path)):
            entry = prediction_log_pb2.PredictionLog.FromString(record.numpy())
            if entry.WhichOneof("log_type") != "predict_log":
                log.warning("%s: skipping a %s warm-up record (only predict is supported)",
                            path, entry.WhichOneof("log_type"))
                continue
            request = entry.predict_log.request
            requests.append((self.signature(request.model_spec.signature_name),
                             {key: tf.make_ndarray(value)
                              for key, value in request.inputs.items()}))
        return requests

    def warm_up(self) -> int:
        """Replay the version's warm-up requests, as TF Serving does.

        The trainer writes real requests there, so the first user request does
        not pay for graph and kernel set-up. Returns how many were replayed; any
        failure fails the load.
        """
        requests = self.warmup_requests()
        for signature, inputs in requests:
            self.run(signature, inputs)
        return len(requests)


class Accelerator(Protocol):
    name: str
    file: str

    def describe(self) -> str: ...

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


@contextmanager
def tf_errors() -> Iterator[None]:
    """TensorFlow's errors as TF Serving answers them: runtime errors keep their
    code, a tensor that cannot be made is an invalid argument."""
    try:
        yield
    except tf.errors.OpError as exc:
        raise ServingError(Code(exc.error_code), op_error_message(exc.message)) from exc
    except (TypeError, ValueError) as exc:
        raise invalid_argument(first_line(exc)) from exc


def read_signature_defs(path: Path) -> dict[str, meta_graph_pb2.SignatureDef]:
    pb = path / "saved_model.pb"
    try:
        model = saved_model_pb2.SavedModel.FromString(pb.read_bytes())
    except OSError as exc:
        raise ServingError(Code.NOT_FOUND, f"cannot read {pb}: {exc.strerror or exc}") from exc
    except Exception as exc:  # protobuf's DecodeError, or worse for random bytes
        raise ServingError(Code.DATA_LOSS, f"{pb} is not a SavedModel: {first_line(exc)}") from exc
    for meta_graph in model.meta_graphs:
        if SERVE_TAG in meta_graph.meta_info_def.tags:
            return dict(meta_graph.signature_def)
    raise ServingError(Code.NOT_FOUND, f"{path} has no meta graph tagged {SERVE_TAG!r}")


def op_error_message(message: str) -> str:
    """The cause and the op of a TF runtime error, without its graph dump.

    "Graph execution error: ... Detected at node map/while/decode_image/DecodeImage
    ... Input is empty. [[{{node ...}}]]" becomes
    "Input is empty. (at node map/while/decode_image/DecodeImage)".
    """
    node = re.search(r"Detected at node (\S+)", message)
    kept = [line.strip() for line in message.splitlines()
            if line.strip() and not line.startswith((" ", "\t"))
            and not line.startswith(("Graph execution error", "Detected at node", "<stack"))]
    text = " ".join(kept) or first_line(message)
    return f"{text} (at node {node.group(1)})" if node else text


def first_line(error: object) -> str:
    """TF appends graph node dumps to its messages; the first line is the news."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
