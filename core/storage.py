"""Uploaded images on disk, stored by content hash.

The same photo uploaded twice is stored once; a file is written under a
temporary name and renamed into place, so a reader (a worker) never sees half
of one. The site writes here and the workers read: both need UPLOAD_DIR, and
the workers write too when they purge old uploads. Since two records can share
a file, files are removed only once no record names them: by core/deletion.py,
and by an upload whose records the database refused (frontend/predictions.py).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path


class ImageStore:
    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, sha256: str, extension: str) -> Path:
        _check(sha256)
        return self.root / sha256[:2] / f"{sha256}.{extension}"

    def put(self, data: bytes, extension: str) -> str:
        """Stores the bytes unless already there; returns their sha256."""
        sha256 = hashlib.sha256(data).hexdigest()
        target = self.path(sha256, extension)
        if target.exists():
            return sha256
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return sha256

    def read(self, sha256: str, extension: str) -> bytes:
        return self.path(sha256, extension).read_bytes()

    def thumbnail_path(self, sha256: str) -> Path:
        _check(sha256)
        return self.root / "thumbnails" / sha256[:2] / f"{sha256}.jpg"

    def remove(self, sha256: str, extension: str) -> tuple[bool, bool]:
        """Removes the image and its thumbnail; returns whether each was there."""
        return (_unlink(self.path(sha256, extension)), _unlink(self.thumbnail_path(sha256)))


def _check(sha256: str) -> None:
    if len(sha256) != 64 or not all(c in "0123456789abcdef" for c in sha256):
        raise ValueError(f"not a sha256 digest: {sha256!r}")


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True
