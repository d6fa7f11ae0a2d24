"""Reading the files a form sent and checking them before anything is stored.

The type comes from the content (Pillow), never from the file name. Sizes are
checked before decoding, pixel counts from the header before the pixels are
read (a decompression bomb is refused without being expanded), an animation's
frames times its pixels from its blocks, and then the first frame is decoded
so a truncated file is refused here, not in a worker.
Photos whose EXIF says "rotate me" are turned upright, since Serving decodes
pixels as stored and would see them sideways.
"""

from __future__ import annotations

import io
import re
import struct
import unicodedata
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

from PIL import Image, ImageOps, UnidentifiedImageError

from core.settings import Settings

if TYPE_CHECKING:
    from werkzeug.datastructures import FileStorage, MultiDict

#: What Serving's tf.io.decode_image reads, with the file extension stored. MPO
#: is a camera JPEG carrying a second picture: a JPEG to any decoder.
FORMATS = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "GIF": "gif", "BMP": "bmp",
           "WEBP": "webp"}
#: Pillow's readers of those (its JPEG reader opens MPO too).
OPENERS = ["JPEG", "PNG", "GIF", "BMP", "WEBP"]
#: What Pillow raises on a file cut short or corrupt, header or pixels.
DAMAGED = (OSError, SyntaxError, ValueError, EOFError, struct.error, NotImplementedError,
           OverflowError, IndexError, KeyError, TypeError)
MIMETYPES = {"jpg": "image/jpeg", "png": "image/png", "gif": "image/gif", "bmp": "image/bmp",
             "webp": "image/webp"}
ORIENTATION = 0x0112

# Past the limit Pillow warns; check_image refuses those images itself.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
FORMAT_NAMES = "JPEG, PNG, GIF, BMP or WebP"
#: Unicode categories left out of display names: controls, formats (bidi
#: overrides, zero-width characters) and line or paragraph separators.
UNPRINTED = {"Cc", "Cf", "Zl", "Zp"}


class UploadError(Exception):
    """An upload refused, with a message for its sender and the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class Limits:
    file_bytes: int
    pixels: int
    batch_images: int
    #: What a .zip may inflate to in all: a request's own limit.
    archive_bytes: int

    @classmethod
    def from_settings(cls, s: Settings) -> Limits:
        return cls(file_bytes=s.max_image_file_bytes, pixels=s.max_image_pixels,
                   batch_images=s.max_batch_images, archive_bytes=s.max_request_bytes)


@dataclass(frozen=True)
class CheckedImage:
    filename: str
    data: bytes
    extension: str
    width: int
    height: int


@dataclass(frozen=True)
class SentFiles:
    """The files of one upload form, read: loose images and .zip archives, each
    as (name as sent, content)."""

    images: list[tuple[str | None, bytes]]
    archives: list[tuple[str | None, bytes]]

    @property
    def name(self) -> str | None:
        """A batch's name: its first archive's."""
        return display_name(self.archives[0][0]) if self.archives else None

    def files(self, limits: Limits) -> list[tuple[str | None, bytes | UploadError]]:
        """The loose images, then every archive's members; raises UploadError for
        an archive that cannot be read."""
        from frontend.archives import unzip  # archives imports this module

        files: list[tuple[str | None, bytes | UploadError]] = list(self.images)
        for name, data in self.archives:
            files += unzip(data, name, limits)
        return files


def sent_files(parts: MultiDict[str, FileStorage]) -> SentFiles:
    """The file fields 'images' and 'archive' (the page and the API take the same).
    A browser form with no file chosen sends a part with neither a name nor
    content: such parts are left out. A named empty file stays, to be refused as
    empty, and so does content without a name."""

    def read(field: str) -> list[tuple[str | None, bytes]]:
        found = [(part.filename, part.read()) for part in parts.getlist(field)]
        return [(name, data) for name, data in found if name or data]

    return SentFiles(images=read("images"), archives=read("archive"))


def display_name(filename: str | None) -> str:
    """The name as sent, folders kept (a .zip's, a client's relative paths) but
    never absolute (POSIX, a Windows drive or a UNC share) or climbing out, and
    without control or bidi characters (NUL, ESC, U+202E), trimmed to fit its
    column. Only shown; files are stored by hash."""
    text = "".join(c if unicodedata.category(c) not in UNPRINTED else " " if c.isspace() else ""
                   for c in filename or "").replace("\\", "/")
    text = re.sub(r"^[A-Za-z]:", "", text)  # C:\photos\x.jpg
    parts = (p.strip() for p in text.split("/"))
    name = "/".join(p for p in parts if p not in ("", ".", ".."))
    return (name or "upload")[-255:]


def guard_pixels(pixels: int) -> None:
    """Pillow's own decompression-bomb guard at the site's pixel limit: past twice
    that, Image.open refuses an image before reading its pixels, and check_image
    refuses the rest from the header with a clearer message. Pillow keeps the
    limit in a process-wide global, so it is set once, when the app is made."""
    Image.MAX_IMAGE_PIXELS = pixels


def check_image(data: bytes, filename: str | None, limits: Limits) -> CheckedImage:
    name = display_name(filename)
    if not data:
        raise UploadError(f"{name}: the file is empty")
    _check_size(name, len(data), limits)
    try:
        # Only the formats we take: Pillow's other plugins need not parse strangers' bytes.
        image = Image.open(io.BytesIO(data), formats=OPENERS)
    except UnidentifiedImageError:
        raise UploadError(f"{name}: not an image of a type we take ({FORMAT_NAMES}); the type "
                          "is read from the content, not the name", 415) from None
    except Image.DecompressionBombError:
        raise UploadError(f"{name}: the image has too many pixels", 413) from None
    except DAMAGED as exc:
        raise UploadError(f"{name}: the image data is damaged ({exc})") from None
    if image.format not in FORMATS:
        raise UploadError(f"{name}: {image.format} images are not supported; send "
                          f"{FORMAT_NAMES}", 415)
    width, height = image.size
    if width * height > limits.pixels:
        raise UploadError(f"{name}: {width}x{height} is {width * height / 1e6:.1f} megapixels; "
                          f"the limit is {limits.pixels / 1e6:.1f}", 413)
    _check_frames(name, data, image, limits)
    try:
        image.load()
    except (*DAMAGED, Image.DecompressionBombError) as exc:
        raise UploadError(f"{name}: the image data is damaged ({exc})") from None
    extension = FORMATS[image.format]
    if _orientation(image) in range(2, 9):
        try:
            data = _upright(image, extension)
        except DAMAGED as exc:
            raise UploadError(f"{name}: the image's EXIF data is damaged ({exc})") from None
        _check_size(name, len(data), limits)
        width, height = Image.open(io.BytesIO(data)).size
    return CheckedImage(name, data, extension, width, height)


def _check_frames(name: str, data: bytes, image: Image.Image, limits: Limits) -> None:
    """Animations, counted as the decoders pay for them. Serving's decode_image keeps
    the first frame of a GIF, but giflib reads every frame first: 100 frames of
    2000x2000 (a 390 kB file) cost 388 MB and 3.8 s there. So a GIF's frames times
    its canvas (the screen, or a frame reaching past it) must be within the pixel
    limit, and so must an APNG's (acTL's count: Serving reads only its first frame,
    but browsers and Pillow play them all). An animated WebP is refused: Serving
    cannot decode one at all ("WebP Animation must be 4 channel RGBA"). A camera's
    MPO holds a second picture that no decoder here reads, so it is not counted."""
    if image.format == "WEBP" and data[12:16] == b"VP8X" and data[20] & 0x02:
        raise UploadError(f"{name}: an animated WebP, which the model cannot read; send a still "
                          f"image ({FORMAT_NAMES})", 415)
    if image.format == "GIF":
        frames, width, height = gif_frames(data, image.size)
    elif image.format == "PNG":
        frames, (width, height) = getattr(image, "n_frames", 1), image.size
    else:
        return
    pixels = frames * width * height
    if frames > 1 and pixels > limits.pixels:
        raise UploadError(f"{name}: {frames:,} frames of {width}x{height} is "
                          f"{pixels / 1e6:.1f} megapixels decoded; the limit is "
                          f"{limits.pixels / 1e6:.1f}", 413)


def gif_frames(data: bytes, size: tuple[int, int]) -> tuple[int, int, int]:
    """A GIF's frames and the canvas they are drawn on, from the block lengths alone
    (GIF89a: extensions and images are chains of sub-blocks of up to 255 bytes).
    Pillow's n_frames seeks through every frame in Python, 16 µs each: 5.5 s for an
    8 MB GIF of 333,333 one-pixel frames, which this walk counts in 0.3 s (and a
    10 MB chain of one-byte sub-blocks in 0.4 s). A file cut short counts the
    frames it holds."""
    width, height = size
    flags = data[10]
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)  # after the global palette
    frames, end = 0, len(data)
    while pos < end:
        kind = data[pos]
        if kind == 0x2C and pos + 10 <= end:  # an image: left, top, width, height, flags
            left, top, w, h = struct.unpack_from("<4H", data, pos + 1)
            frames += 1
            if left + w > width:
                width = left + w
            if top + h > height:
                height = top + h
            flags = data[pos + 9]
            pos += 11 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)  # and the LZW code size
        elif kind == 0x21:  # an extension: its label, then sub-blocks
            pos += 2
        else:  # the trailer, or the end of what can be read
            break
        while pos < end and (length := data[pos]):
            pos += length + 1
        pos += 1
    return frames, width, height


def _orientation(image: Image.Image) -> int | None:
    """EXIF's orientation (2-8: turn the picture), if it is readable and a number."""
    try:
        value = image.getexif().get(ORIENTATION)
    except DAMAGED:
        return None
    return value if isinstance(value, int) else None


def _check_size(name: str, size: int, limits: Limits) -> None:
    if size > limits.file_bytes:
        raise UploadError(f"{name}: {mb(size)} is over the {mb(limits.file_bytes)} limit "
                          "for one image", 413)


def _upright(image: Image.Image, extension: str) -> bytes:
    upright = ImageOps.exif_transpose(image)
    out = io.BytesIO()
    if extension == "jpg":
        upright.save(out, "JPEG", quality=95, exif=upright.getexif().tobytes())
    else:
        upright.save(out, image.format)
    return out.getvalue()


def mb(size: int) -> str:
    return f"{size / 2**20:.1f} MB"
