"""`python -m frontend.client classify DIR`: a folder of images through the site's API.

Files go up as batches (POST /api/batches, --per-request files each), then the
batches are followed with a progress bar until every image is finished, and
one CSV row per file is written. Only `requests` and `tqdm`: it runs anywhere.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import requests
from tqdm import tqdm

DEFAULT_URL = "http://127.0.0.1:8000"
FIELDS = ["path", "status", "label", "confidence", "model_version", "error"]


class ClientError(Exception):
    pass


def files_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise ClientError(f"{folder} is not a folder")
    found = sorted(p for p in folder.rglob("*") if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    if not found:
        raise ClientError(f"{folder} holds no files")
    return found


def classify(folder: Path, out: Path, *, url: str = DEFAULT_URL, per_request: int = 100,
             timeout: float = 3600, progress: bool = True) -> dict[str, int]:
    """Classifies every file under `folder`; writes `out`; returns counts per status."""
    paths = files_in(folder)
    session = requests.Session()
    rows: dict[str, dict[str, object]] = {}
    batches: list[tuple[str, list[Path]]] = []
    with tqdm(total=len(paths), unit="img", disable=not progress) as bar:
        for start in range(0, len(paths), per_request):
            chunk = paths[start:start + per_request]
            body = _send(session, url, folder, chunk)
            for rejected in body.get("rejected", []):
                rows[rejected["name"]] = {"status": "rejected", "error": rejected["error"]}
                bar.update(1)
            batches.append((body["id"], chunk))
        deadline = time.monotonic() + timeout
        waiting = {batch_id for batch_id, _ in batches}
        finished = dict.fromkeys(waiting, 0)
        while waiting:
            if time.monotonic() > deadline:
                raise ClientError(f"{len(waiting)} batch(es) unfinished after {timeout:.0f} s")
            for batch_id in sorted(waiting):
                state = _get(session, f"{url}/api/batches/{batch_id}")
                bar.update(state["finished"] - finished[batch_id])
                finished[batch_id] = state["finished"]
                if state["complete"]:
                    waiting.discard(batch_id)
            if waiting:
                time.sleep(0.5)
    for batch_id, _ in batches:
        for p in _get(session, f"{url}/api/batches/{batch_id}/predictions")["predictions"]:
            rows[p["filename"]] = p
    counts: dict[str, int] = {}
    with out.open("w", newline="") as file:
        writer = csv.DictWriter(file, FIELDS, extrasaction="ignore")
        writer.writeheader()
        for path in paths:
            name = str(path.relative_to(folder))
            row = rows.get(name) or rows.get(path.name) or {"status": "missing"}
            counts[str(row["status"])] = counts.get(str(row["status"]), 0) + 1
            writer.writerow({**row, "path": name})
    return counts


def _send(session: requests.Session, url: str, folder: Path, chunk: list[Path]) -> dict:
    files = [("images", (str(p.relative_to(folder)), p.read_bytes())) for p in chunk]
    try:
        response = session.post(f"{url}/api/batches", files=files, timeout=300)
    except requests.RequestException as exc:
        raise ClientError(f"cannot reach {url}: {exc}") from exc
    return _body(response)


def _get(session: requests.Session, url: str) -> dict:
    try:
        return _body(session.get(url, timeout=60))
    except requests.RequestException as exc:
        raise ClientError(f"cannot reach {url}: {exc}") from exc


def _body(response: requests.Response) -> dict:
    try:
        body = response.json()
    except ValueError:
        body = {"error": response.text[:200]}
    if response.status_code >= 400:
        raise ClientError(f"HTTP {response.status_code}: {body.get('error', body)}")
    return body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m frontend.client",
                                     description="Classify images through the site's API.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("classify", help="send a folder of images; write a CSV")
    run.add_argument("folder", type=Path)
    run.add_argument("--url", default=DEFAULT_URL, help=f"the site (default {DEFAULT_URL})")
    run.add_argument("--out", type=Path, default=Path("predictions.csv"))
    run.add_argument("--per-request", type=int, default=100, metavar="N")
    run.add_argument("--timeout", type=float, default=3600, metavar="SECONDS")
    args = parser.parse_args(argv)
    try:
        counts = classify(args.folder, args.out, url=args.url.rstrip("/"),
                          per_request=args.per_request, timeout=args.timeout)
    except ClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    print(f"wrote {args.out}: {summary}")
    return 0 if set(counts) <= {"done"} else 1


if __name__ == "__main__":
    sys.exit(main())
