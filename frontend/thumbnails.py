"""Small JPEG copies of uploads for lists (history, the admin's records), made once.

A thumbnail is removed with its image (core/deletion.py); one made while its
image was being deleted is removed again here, so none outlives its photo.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from PIL import Image, ImageOps

from core.storage import ImageStore

SIZE = (160, 160)


def thumbnail(store: ImageStore, sha256: str, extension: str) -> Path:
    target = store.thumbnail_path(sha256)
    if target.exists():
        return target
    source = store.path(sha256, extension)
    with Image.open(source) as image:
        small = ImageOps.exif_transpose(image).convert("RGB")
        small.thumbnail(SIZE)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=".thumb-", suffix=".jpg")
    try:
        with os.fdopen(fd, "wb") as file:
            small.save(file, "JPEG", quality=80)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    if not source.exists():  # deleted meanwhile: its deleter may have looked before we wrote
        target.unlink(missing_ok=True)
        raise FileNotFoundError(f"{source} was deleted")
    return target
