"""Small JPEG copies of uploads for lists (history, the admin's records), made once."""

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
    with Image.open(store.path(sha256, extension)) as image:
        small = ImageOps.exif_transpose(image).convert("RGB")
        small.thumbnail(SIZE)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=".thumb-", suffix=".jpg")
    with os.fdopen(fd, "wb") as file:
        small.save(file, "JPEG", quality=80)
    os.replace(temporary, target)
    return target
