"""Reading an uploaded .zip: how many entries it holds, before zipfile reads them, then its files.

zipfile.ZipFile parses the whole central directory when it opens an archive,
about 500 bytes and 7-22 µs an entry: a 19 MB zip of 200,000 empty files
costs 96 MB and 1.4 s of CPU (4.4 s on a slower machine) before its members
could be counted. So the archive's
tail is read first, as PKWARE's APPNOTE.TXT lays it out: the end of central
directory record (4.3.16, 22 bytes and a comment of up to 65,535), and the
ZIP64 end record and its locator just before it (4.3.14, 4.3.15) when the
archive has more than 65,534 entries. They say how many entries there are
and where the central directory lies; that region is found exactly as
zipfile finds it (the record at the very end, else the last signature in the
comment's reach; no ZIP64 extensible data), so the count is of what zipfile
would parse. An end record can understate its entries, so the larger of its
count and the central headers' signatures in that region (a C-speed
bytes.count) is what is checked.
"""

from __future__ import annotations

import io
import lzma
import struct
import zipfile
import zlib
from pathlib import PurePosixPath

from frontend.uploads import DAMAGED, Limits, UploadError, display_name, mb

#: 4.3.16: signature, this disk, the directory's first disk, entries on this disk,
#: entries in all, the directory's size, its offset, the comment's length.
END_RECORD = struct.Struct("<4s4H2LH")
END_SIGNATURE = b"PK\x05\x06"
MAX_COMMENT = 0xFFFF
#: 4.3.15: signature, the ZIP64 record's disk, its offset, disks in all.
ZIP64_LOCATOR = struct.Struct("<4sLQL")
ZIP64_LOCATOR_SIGNATURE = b"PK\x06\x07"
#: 4.3.14: signature, the record's size, versions made by and needed, this disk,
#: the directory's first disk, entries on this disk, in all, the directory's size, offset.
ZIP64_RECORD = struct.Struct("<4sQ2H2L4Q")
ZIP64_RECORD_SIGNATURE = b"PK\x06\x06"
#: 4.3.12: each central directory header starts with this.
CENTRAL_SIGNATURE = b"PK\x01\x02"
#: Entries allowed per image a batch holds, before the central directory is read:
#: a file, its macOS resource fork (__MACOSX/._name) and a folder. Folders and
#: hidden files are then left out, and the files themselves counted exactly.
ENTRIES_PER_IMAGE = 3


def listed_entries(data: bytes) -> int | None:
    """How many entries zipfile would parse: the end records' count, or the central
    headers in the directory they describe where those are more. None where there
    is no end record, or the directory cannot lie before it (zipfile refuses those too)."""
    location = _end_record(data)
    if location is None:
        return None
    _, _, _, _, entries, size, _, _ = END_RECORD.unpack_from(data, location)
    end = location
    locator = location - ZIP64_LOCATOR.size
    record = locator - ZIP64_RECORD.size
    if record >= 0 and data[locator:locator + 4] == ZIP64_LOCATOR_SIGNATURE \
            and data[record:record + 4] == ZIP64_RECORD_SIGNATURE:
        fields = ZIP64_RECORD.unpack_from(data, record)
        entries, size, end = fields[7], fields[8], record
    start = end - size
    if start < 0:
        return None
    return max(entries, data.count(CENTRAL_SIGNATURE, start, end))


def _end_record(data: bytes) -> int | None:
    """The end record's offset: at the very end when there is no comment, else the
    last signature within a comment's reach of the end."""
    last = len(data) - END_RECORD.size
    if last >= 0 and data[last:last + 4] == END_SIGNATURE and data[-2:] == b"\x00\x00":
        return last
    # zipfile's window: one byte wider than the longest comment.
    found = data.rfind(END_SIGNATURE, max(last - MAX_COMMENT - 1, 0))
    return found if 0 <= found <= last else None


def check_entries(data: bytes, name: str, limits: Limits) -> None:
    """Refuses (413) an archive listing more entries than a batch could take."""
    entries = listed_entries(data)
    if entries is None:
        raise UploadError(f"{name}: not a valid .zip archive")
    if entries > limits.batch_images * ENTRIES_PER_IMAGE:
        raise UploadError(f"{name} lists {entries:,} entries; a batch holds at most "
                          f"{limits.batch_images:,} files", 413)


def unzip(data: bytes, filename: str | None,
          limits: Limits) -> list[tuple[str, bytes | UploadError]]:
    """The files of a .zip, or for each member too large, the error saying so.
    Members are read with a cap, so one that inflates without end (a zip bomb,
    lying about its size) is cut off instead of filling memory."""
    name = display_name(filename)
    check_entries(data, name, limits)
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, *DAMAGED):
        raise UploadError(f"{name}: not a valid .zip archive") from None
    members = [m for m in archive.infolist() if not m.is_dir() and not _hidden(m.filename)]
    if len(members) > limits.batch_images:
        raise UploadError(f"{name}: {len(members):,} files; a batch holds at most "
                          f"{limits.batch_images:,}", 413)
    files: list[tuple[str, bytes | UploadError]] = []
    inflated = 0
    for member in members:
        if member.file_size > limits.file_bytes:
            files.append((member.filename, UploadError(
                f"{display_name(member.filename)}: {mb(member.file_size)} is over the "
                f"{mb(limits.file_bytes)} limit for one image", 413)))
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
                              f"{mb(limits.archive_bytes)}", 413)
        files.append((member.filename, content))
    return files


def _hidden(path: str) -> bool:
    """macOS resource forks and dot files ride along in many archives."""
    return any(part.startswith(".") or part == "__MACOSX" for part in PurePosixPath(path).parts)
