"""The model contract: what the trainer exports, Serving loads and the clients send.

Free of TensorFlow, so the site and the workers can hold it too. A SavedModel
version answers on one signature that takes encoded image files and returns
each class's probability beside the class names; TF Serving's REST API
base64-decodes inputs whose name ends in `_bytes`, which is why the input is
named as it is. Versions live in numbered folders under the model's base
path, the rule TF Serving applies when it polls that folder.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath

#: TensorFlow's default serving signature key: what clients get with no signature_name.
SIGNATURE = "serving_default"
#: A 1-D string tensor of encoded image files (JPEG, PNG, GIF, BMP).
INPUT = "image_bytes"
#: [batch, classes] float32 probabilities, in the order of CLASSES.
SCORES = "scores"
#: [batch, classes] strings: the class names, so no client needs a label file.
CLASSES = "classes"
#: Where TF Serving finds the requests it replays before a version takes traffic.
WARMUP_FILE = PurePosixPath("assets.extra") / "tf_serving_warmup_requests"
#: Beside a version's SavedModel: the same network as a TFLite file taking decoded
#: pixels [1, 224, 224, 3] in [0, 255], checked by the trainer against the
#: SavedModel, which the embedded server runs in its place. Not "model.tflite":
#: TF Serving's --prefer_tflite_model would serve that file, pixels in, in place
#: of the image_bytes signature clients call.
ACCELERATED_FILE = "pixels.tflite"
#: The file must give the SavedModel's top class on this share of the check photos
#: (the trainer's test split and photos from elsewhere; the server's warm-up
#: photos), and its accuracy stay within this many points of the SavedModel's.
ACCELERATED_MIN_SAME_TOP = 0.99
ACCELERATED_MAX_POINTS_APART = 0.5

#: TF Serving's version numbers are int64.
MAX_VERSION = 2**63 - 1
#: ASCII digits only: "²".isdigit() is True, and int("²") raises.
_VERSION_NAME = re.compile(r"[0-9]+")


def version_number(name: str) -> int | None:
    """The version a folder of this name holds ("00000123" is 123), or None for
    any other name (reports/, .staging-*), which TF Serving ignores."""
    if not _VERSION_NAME.fullmatch(name):
        return None
    number = int(name)
    return number if number <= MAX_VERSION else None


def version_folders(base_path: Path) -> dict[int, Path]:
    """Version number -> folder under a model's base path; none if it is missing."""
    try:
        entries = list(os.scandir(base_path))
    except OSError:
        return {}
    found: dict[int, Path] = {}
    for entry in entries:
        number = version_number(entry.name)
        if number is not None and entry.is_dir():
            found[number] = Path(entry.path)
    return found
