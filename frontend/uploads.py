"""Reading the files a form sent and checking them before anything is stored.

The type comes from the content (Pillow), never from the file name. Sizes are
checked before decoding, pixel counts from the header before the pixels are
read (a decompression bomb is refused without being expanded), and then the
whole image is decoded so a truncated file is refused here, not in a worker.
Photos whose EXIF says "rotate me" are turned upright, since Serving decodes
pixels as stored and would see them sideways.
"""

from __future__ import annotations

import io
import lzma
import re
import struct
import unicodedata
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import PurePosixPath
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


def _orientation(image: Image.Image) -> int | None:
    """EXIF's orientation (2-8: turn the picture), if it is readable and a number."""
    try:
        value = image.getexif().get(ORIENTATION)
    except DAMAGED:
        return None
    return value if isinstance(value, int) else None


def _check_size(name: str, size: int, limits: Limits) -> None:
    if size > limits.file_bytes:
        raise UploadError(f"{name}: {_mb(size)} is over the {_mb(limits.file_bytes)} limit "
                          "for one image", 413)


def _upright(image: Image.Image, extension: str) -> bytes:
    upright = ImageOps.exif_transpose(image)
    out = io.BytesIO()
    if extension == "jpg":
        upright.save(out, "JPEG", quality=95, exif=upright.getexif().tobytes())
    else:
        upright.save(out, image.format)
    return out.getvalue()


def unzip(data: bytes, filename: str | None,
          limits: Limits) -> list[tuple[str, bytes | UploadError]]:
    """The files of a .zip, or for each member too large, the error saying so.
    Members are read with a cap, so one that inflates without end (a zip bomb,
    lying about its size) is cut off instead of filling memory."""
    name = display_name(filename)
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, *DAMAGED):
        raise UploadError(f"{name}: not a valid .zip archive") from None
    members = [m for m in archive.infolist() if not m.is_dir() and not _hidden(m.filename)]
    if len(members) > limits.batch_images:
        raise UploadError(f"{name}: {len(members)} files; a batch holds at most "
                          f"{limits.batch_images}", 413)
    files: list[tuple[str, bytes | UploadError]] = []
    inflated = 0
    for member in members:
        if member.file_size > limits.file_bytes:
            files.append((member.filename, UploadError(
                f"{display_name(member.filename)}: {_mb(member.file_size)} is over the "
                f"{_mb(limits.file_bytes)} limit for one image", 413)))
            continue
        try:
            with archive.open(member) as stream:
                content = stream.read(limits.file_bytes + 1)
        except (zipfile.BadZipFile, NotImplementedError, RuntimeError, zlib.error,
                lzma.LZMAError, *DAMAGED) as exc:
            raise UploadError(f"{name}: cannot read {member.filename} ({exc})") from None
        inflated += len(content)
        if inflated > limits.archive_bytes:
            raise UploadError(f"{name}: the archive inflates to over "
                              f"{_mb(limits.archive_bytes)}", 413)
        files.append((member.filename, content))
    return files


def _hidden(path: str) -> bool:
    """macOS resource forks and dot files ride along in many archives."""
    return any(part.startswith(".") or part == "__MACOSX" for part in PurePosixPath(path).parts)


def _mb(size: int) -> str:
    return f"{size / 2**20:.1f} MB"
