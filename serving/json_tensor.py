"""JSON <-> tensors, following TF Serving's REST API documentation.

Requests come in one of two forms:

- row ("instances"): a list with one entry per example; with one input an
  entry is the value itself, with several it is an object of named inputs;
- columnar ("inputs"): the whole batch per input, again bare or named.

Binary strings travel as {"b64": "..."}; the answer mirrors the request's
form ("predictions" or "outputs"), with one output unnamed and several as
objects. String outputs whose names end in `_bytes` are sent back base64'd.
Every mistake is an INVALID_ARGUMENT naming the input and what was expected.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import numpy as np
import tensorflow as tf

from serving.batching import Tensors
from serving.errors import invalid_argument
from serving.servable import TensorSpec


def parse_body(body: bytes) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except RecursionError:
        raise invalid_argument("JSON Parse error: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, bad UTF-8, integers of 4300+ digits
        raise invalid_argument(f"JSON Parse error: {exc}") from None
    if not isinstance(document, dict):
        raise invalid_argument("JSON Parse error: the request body must be a JSON object")
    return document


def request_inputs(document: dict[str, Any], specs: dict[str, TensorSpec]
                   ) -> tuple[str, Tensors, int | None]:
    """("row" | "columnar", tensors, batch size or None when not batchable)."""
    has_rows, has_columns = "instances" in document, "inputs" in document
    if has_rows == has_columns:
        raise invalid_argument(
            "Missing 'inputs' or 'instances' key" if not has_rows else
            "Not formatted correctly expecting only one of 'inputs' or 'instances' keys exists")
    try:
        if has_rows:
            tensors = _rows(document["instances"], specs)
            return "row", tensors, len(document["instances"])
        tensors = _columns(document["inputs"], specs)
    except RecursionError:
        raise invalid_argument("inputs are nested too deeply") from None
    return "columnar", tensors, _batch_size(tensors)


def _rows(instances: Any, specs: dict[str, TensorSpec]) -> Tensors:
    if not isinstance(instances, list) or not instances:
        raise invalid_argument("'instances' must be a non-empty list, one entry per example")
    if len(specs) == 1:
        (name,) = specs
        values = [_unwrap_named(instance, specs, f"instance {index}")
                  for index, instance in enumerate(instances)]
        return {name: to_array(values, specs[name], name, batched=True)}
    columns: dict[str, list[Any]] = {name: [] for name in specs}
    for index, instance in enumerate(instances):
        if not isinstance(instance, dict):
            raise invalid_argument(
                f"instance {index} must be an object with the inputs {sorted(specs)}")
        _check_names(instance, specs, f"instance {index}")
        for name in specs:
            columns[name].append(instance[name])
    return {name: to_array(values, specs[name], name, batched=True)
            for name, values in columns.items()}


def _columns(inputs: Any, specs: dict[str, TensorSpec]) -> Tensors:
    if len(specs) == 1:
        (name,) = specs
        return {name: to_array(_unwrap_named(inputs, specs, "'inputs'"), specs[name], name)}
    if not isinstance(inputs, dict):
        raise invalid_argument(f"'inputs' must be an object with the inputs {sorted(specs)}")
    _check_names(inputs, specs, "'inputs'")
    return {name: to_array(inputs[name], specs[name], name) for name in specs}


def _unwrap_named(value: Any, specs: dict[str, TensorSpec], where: str) -> Any:
    """With a single input, {"<name>": value} and a bare value mean the same."""
    if isinstance(value, dict) and "b64" not in value:
        _check_names(value, specs, where)
        (name,) = specs
        return value[name]
    return value


def _check_names(given: dict[str, Any], specs: dict[str, TensorSpec], where: str) -> None:
    unknown = sorted(set(given) - set(specs))
    if unknown:
        raise invalid_argument(f"{where}: input {unknown[0]!r} is not in the signature, "
                               f"whose inputs are {sorted(specs)}")
    missing = sorted(set(specs) - set(given))
    if missing:
        raise invalid_argument(f"{where} does not have named input: {missing[0]}")


def to_array(value: Any, spec: TensorSpec, name: str, batched: bool = False) -> np.ndarray:
    is_string = spec.dtype == tf.string
    array = _strings(value, name) if is_string else _numbers(value, spec.dtype, name)
    _check_shape(array, spec, name, batched)
    return array


def _strings(value: Any, name: str) -> np.ndarray:
    flat: list[bytes] = []
    shape = _walk(value, flat, name)
    array = np.empty(len(flat), dtype=object)
    array[:] = flat
    return array.reshape(shape)


def _walk(value: Any, flat: list[bytes], name: str) -> tuple[int, ...]:
    """Appends the leaves of a nested list of strings; returns its (regular) shape."""
    if isinstance(value, list):
        shapes = {_walk(item, flat, name) for item in value}
        if len(shapes) > 1:
            raise invalid_argument(f"input {name!r}: nested lists of different lengths")
        return (len(value), *(shapes.pop() if shapes else ()))
    if isinstance(value, dict):
        if set(value) != {"b64"} or not isinstance(value["b64"], str):
            raise invalid_argument(f'input {name!r}: an object value must be {{"b64": "<base64>"}}')
        try:
            flat.append(base64.b64decode(value["b64"], validate=True))
        except (binascii.Error, ValueError):
            raise invalid_argument(
                f"input {name!r}: Unable to base64 decode the \"b64\" value") from None
        return ()
    if isinstance(value, str):
        try:
            flat.append(value.encode())
        except UnicodeEncodeError:  # a lone surrogate such as "\ud800"
            raise invalid_argument(f"input {name!r}: a string that is not valid Unicode; "
                                   'send binary data as {"b64": ...}') from None
        return ()
    raise invalid_argument(f"input {name!r} takes strings or {{\"b64\": ...}} objects, "
                           f"not {json.dumps(value)[:40]}")


def _numbers(value: Any, dtype: tf.DType, name: str) -> np.ndarray:
    try:
        array = np.asarray(value)
    except ValueError:
        raise invalid_argument(f"input {name!r}: nested lists of different lengths") from None
    want_bool, kind = dtype == tf.bool, array.dtype.kind
    if array.size and (kind not in "biuf" or (kind == "b") != want_bool
                       or (kind == "f" and dtype.is_integer)):
        raise invalid_argument(f"input {name!r} takes {dtype.name} values; "
                               f"got {json.dumps(array.flat[0], default=str)[:40]}")
    if array.size and dtype.is_integer and (array.min() < dtype.min or array.max() > dtype.max):
        raise invalid_argument(f"input {name!r}: a value outside the range of {dtype.name}")
    return array.astype(dtype.as_numpy_dtype)


def _check_shape(array: np.ndarray, spec: TensorSpec, name: str, batched: bool) -> None:
    if spec.shape is None:
        return
    shape = array.shape
    expected = spec.shape
    if len(shape) != len(expected) or any(
            want is not None and got != want for got, want in zip(shape, expected, strict=True)):
        if batched:
            shape, expected = shape[1:], expected[1:]
        raise invalid_argument(
            f"input {name!r} has {'per-example ' if batched else ''}shape {_show(shape)}; "
            f"the signature expects {_show(expected)}")


def _show(shape: tuple[int | None, ...]) -> str:
    return "[" + ", ".join("-1" if d is None else str(d) for d in shape) + "]"


def _batch_size(tensors: Tensors) -> int | None:
    """The first dimension all inputs share; None (not batchable) otherwise."""
    sizes = {array.shape[0] if array.ndim else None for array in tensors.values()}
    return sizes.pop() if len(sizes) == 1 else None


def response(form: str, outputs: Tensors) -> dict[str, Any]:
    if form == "columnar":
        if len(outputs) == 1:
            ((name, value),) = outputs.items()
            return {"outputs": to_json(value, name)}
        return {"outputs": {name: to_json(value, name) for name, value in outputs.items()}}
    sizes = {value.shape[0] if value.ndim else None for value in outputs.values()}
    if len(sizes) != 1 or None in sizes:
        raise invalid_argument("the outputs do not share a batch size, so they cannot be "
                               "returned per instance; send 'inputs' (columnar) instead")
    if len(outputs) == 1:
        ((name, value),) = outputs.items()
        return {"predictions": to_json(value, name)}
    columns = {name: to_json(value, name) for name, value in outputs.items()}
    count = sizes.pop()
    return {"predictions": [{name: column[i] for name, column in columns.items()}
                            for i in range(count)]}


def to_json(array: np.ndarray, name: str) -> Any:
    if array.dtype.kind not in ("O", "S"):
        return array.tolist()
    encode = _b64 if name.endswith("_bytes") else _text
    return _map_leaves(array.tolist(), encode)


def _map_leaves(value: Any, function) -> Any:
    if isinstance(value, list):
        return [_map_leaves(item, function) for item in value]
    return function(value)


def _b64(value: bytes) -> dict[str, str]:
    return {"b64": base64.b64encode(value).decode()}


def _text(value: bytes) -> Any:
    try:
        return value.decode()
    except UnicodeDecodeError:
        return _b64(value)
