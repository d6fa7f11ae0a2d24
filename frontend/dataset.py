"""The reviewed images as a training dataset: dataset/<true label>/<file> in a zip,
the folder-per-class layout the trainer reads."""

from __future__ import annotations

import re
import zipfile
from typing import IO

from core.db import Database
from core.storage import ImageStore
from frontend import queries


def write_zip(out: IO[bytes], *, db: Database, store: ImageStore) -> int:
    """Writes the zip into `out`; returns how many images it holds. An image
    reviewed twice under one label goes in once; one no longer stored is left out."""
    count = 0
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive, db.session() as session:
        seen: set[str] = set()
        for p in queries.reviewed(session):
            name = f"dataset/{folder(p.true_label)}/{p.image_sha256[:16]}.{p.image_format}"
            path = store.path(p.image_sha256, p.image_format)
            if name in seen or not path.exists():
                continue
            seen.add(name)
            archive.write(path, name)
            count += 1
    return count


def folder(label: str) -> str:
    """A class name fit for a folder name on any system."""
    return re.sub(r"[^\w.-]+", "_", label).strip("._") or "unlabelled"
