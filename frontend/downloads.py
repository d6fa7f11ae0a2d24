"""Responses a browser saves as a file rather than shows: CSV tables and JSON documents."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence

from flask import Response


def attachment(content: str, filename: str, mimetype: str) -> Response:
    return Response(content, mimetype=mimetype,
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


def csv_attachment(filename: str, header: Sequence[str],
                   rows: Iterable[Sequence[object]]) -> Response:
    """Reads `rows` to the end before returning, so a database cursor may be
    passed while its session is still open."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    return attachment(out.getvalue(), filename, "text/csv")
