"""Degraded copies of photos: how users' pictures differ from a tidy data set.

The test split is scored once more on each degradation, so the report shows
how the model holds up on small, blurry, over-compressed, badly framed or dim
photos, beside its plain test accuracy.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageEnhance, ImageFilter


def _encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def small(image: Image.Image) -> bytes:
    """A thumbnail or a fruit far away: 48 pixels on the long side."""
    copy = image.copy()
    copy.thumbnail((48, 48), Image.Resampling.BILINEAR)
    return _encode(copy)


def blur(image: Image.Image) -> bytes:
    """Out of focus or shaken."""
    return _encode(image.filter(ImageFilter.GaussianBlur(radius=3)))


def jpeg(image: Image.Image) -> bytes:
    """A picture re-sent through chat apps: heavy JPEG blocking."""
    return _encode(image, "JPEG", quality=8)


def crop(image: Image.Image) -> bytes:
    """A close-up that shows part of the scene, off-centre."""
    w, h = image.size
    return _encode(image.crop((w // 3, h // 4, w, h)))


def dim(image: Image.Image) -> bytes:
    """A kitchen at night."""
    return _encode(ImageEnhance.Brightness(image).enhance(0.45))


DEGRADATIONS: dict[str, Callable[[Image.Image], bytes]] = {
    "small": small,
    "blur": blur,
    "jpeg": jpeg,
    "crop": crop,
    "dim": dim,
}


def degrade(path: Path, kind: str) -> bytes:
    """One degraded copy of one photo, encoded."""
    with Image.open(path) as opened:
        return DEGRADATIONS[kind](opened.convert("RGB"))


def degraded_copies(paths: list[Path]) -> dict[str, list[bytes]]:
    """For each degradation, the encoded degraded copy of every photo, in order."""
    copies: dict[str, list[bytes]] = {name: [] for name in DEGRADATIONS}
    for path in paths:
        with Image.open(path) as opened:
            image = opened.convert("RGB")
        for name, degrade in DEGRADATIONS.items():
            copies[name].append(degrade(image))
    return copies
