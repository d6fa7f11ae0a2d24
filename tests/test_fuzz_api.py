"""The JSON API fuzzed from its own OpenAPI document, against the real site.

schemathesis reads /api/openapi.json from gunicorn (a real worker and the
embedded Serving behind it), generates valid and invalid requests for every
operation, the back office's with an administrator's token, and checks each
answer: no 5xx, no status the document does not list, a Content-Type, body
and headers as documented. File fields get real images of every type we
take, images damaged a byte at a time, images over the pixel or byte limits
and random bytes, under hostile part names, beside form fields of the
fuzzer's own; path ids are sometimes ones the site really has, so success
bodies (done and failed predictions, batches, reviews, runs) are checked
too. A second run with Serving down allows 503 as the one 5xx. Each
operation's failure is collected and all are reported, with the request sent.

Hypothesis drives schemathesis's strategies directly (`as_strategy`): the
pytest loader for a schema from a fixture (`schemathesis.pytest.from_fixture`)
reads `node._nodeid`, which pytest 9 no longer has.

Bounded: FUZZ_EXAMPLES examples per operation and mode, derandomized (the
same requests every run; FUZZ_SEED=N explores others), no shrinking, small
upload limits for the site under test, only the loopback address.
"""

from __future__ import annotations

import io
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from PIL import Image
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.failures import FailureGroup

from core.db import Database
from frontend import tokens
from frontend.openapi import IMAGE_TYPES
from tests.factories import (
    add_training_run,
    gunicorn,
    image_bytes,
    noise_png,
    photo_bytes,
    png_claiming,
    zip_bytes,
)

#: Small limits, so no generated request can fill the disk or the memory: the
#: factories' images are a few KB and 160x120.
LIMITS = {"MAX_IMAGE_BYTES": str(48 * 1024), "MAX_REQUEST_BYTES": str(256 * 1024),
          "MAX_IMAGE_PIXELS": str(300 * 300), "MAX_BATCH_IMAGES": "6",
          "ANON_MAX_BATCH_IMAGES": "6", "ANON_MAX_REQUEST_BYTES": str(256 * 1024),
          # quotas high enough that uploads are fuzzed, not refused (tests/test_quotas.py
          # attacks the quotas themselves)
          "UPLOAD_REQUESTS_PER_MINUTE": "100000", "ANON_IMAGES_PER_MINUTE": "1000000",
          "ANON_IMAGES_PER_HOUR": "1000000",
          "WEB_WORKERS": "1", "WEB_THREADS": "4"}
#: not_a_server_error is the assertion in Fuzzer, which knows the one 5xx a run allows.
CHECKS = [status_code_conformance, content_type_conformance,
          response_schema_conformance, response_headers_conformance]
#: Examples per operation and generation mode (valid, invalid), in each run.
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))
#: The same examples every run, unless FUZZ_SEED asks for other ones (to explore).
SEED = os.environ.get("FUZZ_SEED")


def _animated_gif(frames: int) -> bytes:
    out = io.BytesIO()
    pictures = [Image.new("RGB", (40, 30), (i * 40 % 256, 90, 160)) for i in range(frames)]
    pictures[0].save(out, "GIF", save_all=True, append_images=pictures[1:])
    return out.getvalue()


def _samples() -> list[bytes]:
    """Files the site must take or refuse cleanly: each type we take, a photo
    with EXIF rotation, an animated GIF, one over the byte limit, one whose
    header claims too many pixels, cut short, and empty."""
    exif = Image.Exif()
    exif[0x0112] = 6
    good = [image_bytes(i, fmt) for i, fmt in enumerate(["JPEG", "PNG", "GIF", "BMP", "WEBP"])]
    return [*good, photo_bytes("circle", 1, exif=exif.tobytes()), _animated_gif(3),
            noise_png(200), png_claiming(20_000, 20_000), good[0][: len(good[0]) // 2],
            good[1][:40], b""]


SAMPLES = _samples()


@st.composite
def _damaged(draw: st.DrawFn) -> bytes:
    """A real image with a few bytes changed: the decoder's inputs, not just the header."""
    data = bytearray(draw(st.sampled_from(SAMPLES[:7])))
    for _ in range(draw(st.integers(1, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


IMAGE_FILES = st.one_of(st.sampled_from(SAMPLES), _damaged(), st.binary(max_size=512))
ARCHIVES = st.one_of(
    st.lists(st.sampled_from(SAMPLES), max_size=8).map(
        lambda files: zip_bytes({f"dir/{i}.img": data for i, data in enumerate(files)})),
    st.sampled_from(SAMPLES[:3]),  # not a zip
    st.binary(max_size=256))
for media_type in IMAGE_TYPES.split(", "):
    schemathesis.openapi.media_type(media_type, IMAGE_FILES)
schemathesis.openapi.media_type("application/zip", ARCHIVES)


#: Names of file parts and form fields: ordinary ones, none (a file part without
#: one is a plain field), and what the site must defuse or refuse: folders and
#: drives, NUL, a bidi override, quotes and a trailing backslash (which escapes
#: the closing quote of the multipart header), a formula, length.
NAMES = st.one_of(
    st.sampled_from(["photo.jpg", "shot.PNG", "dir/sub/x.webp", None, "../../etc/passwd",
                     "C:\\Users\\me\\a.gif", "a\x00b.jpg", "\u202egpj.exe", "x" * 400,
                     ".hidden.png", "=cmd|' /C calc'!A0.bmp", 'say "cheese".jpg', "back\\",
                     ""]),
    st.text(max_size=60))
#: The document's file fields (their other fields are for the fuzzer to invent).
FILE_FIELDS = {"image", "images", "archive"}
EXTRA_FIELDS = st.lists(st.tuples(NAMES.filter(lambda name: name is not None),
                                  st.text(max_size=20)), max_size=3)


def _upload(url: str, field: str, files: list[tuple[str, bytes]]) -> dict:
    path = "/api/predictions" if field == "image" else "/api/batches"
    response = requests.post(f"{url}{path}", files=[(field, f) for f in files], timeout=30)
    assert response.status_code == 202, response.text
    return response.json()


def _known_ids(url: str, db: Database) -> dict[str, list[str]]:
    """Ids the site has, for the fuzzer to ask about beside made-up ones: a
    prediction the worker has answered (or, with Serving down, failed), a batch
    and a finished training run."""
    one = _upload(url, "image", [("one.png", SAMPLES[1])])
    finished = requests.get(f"{url}{one['url']}?wait=30", timeout=60).json()
    assert finished["status"] in ("done", "failed"), finished
    batch = _upload(url, "images", [("a.jpg", SAMPLES[0]), ("b.txt", b"not an image")])
    run = add_training_run(db, status="rejected", progress=1.0, message="fuzz", version=7)
    return {"prediction_id": [one["id"]], "batch_id": [batch["id"]], "run_id": [run],
            "label": [finished.get("label") or "circle"]}


@pytest.fixture
def fuzzed_site(env: dict[str, str], worker_process, tmp_path: Path,
                monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """gunicorn with a worker behind it, under the small LIMITS; its URL."""
    for key, value in LIMITS.items():
        monkeypatch.setenv(key, value)
    with gunicorn(tmp_path) as url:
        yield url


@pytest.fixture
def token(db: Database, admin_user) -> str:
    """An administrator's API token, for the operations under /admin/api/."""
    with db.session() as opened:
        return tokens.create(opened, admin_user[0])


@dataclass
class Fuzzer:
    """Runs every operation of the site's document through schemathesis and
    collects what the checks find, so one run reports every operation's
    failure rather than the first."""

    url: str
    db: Database
    token: str
    allowed_5xx: frozenset[int] = frozenset()
    #: How often each operation answered each status: (operation, status) -> count.
    answers: Counter = field(default_factory=Counter)
    failures: dict[str, str] = field(default_factory=dict)

    @property
    def cases(self) -> int:
        return sum(self.answers.values())

    def run(self) -> None:
        config = schemathesis.Config.from_dict({"base-url": self.url, "request-timeout": 60})
        schema = schemathesis.openapi.from_url(f"{self.url}/api/openapi.json", config=config)
        known = _known_ids(self.url, self.db)
        operations = [result.ok() for result in schema.get_all_operations()]
        # Deletions last: they may delete the known records the others read.
        for operation in sorted(operations, key=lambda op: op.method.upper() == "DELETE"):
            if operation.label in NOT_FUZZED:
                continue
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                self._fuzz(operation, mode, known)

    def _fuzz(self, operation, mode: GenerationMode, known: dict[str, list[str]]) -> None:
        names = [name for name in known if "{" + name + "}" in operation.path]

        @EXPLORE
        @FUZZ
        @given(case=operation.as_strategy(generation_mode=mode), real=st.integers(0, 2),
               data=st.data())
        def fuzz(case, real: int, data: st.DataObject) -> None:
            if names and real == 0:  # a third of the time, ids the site has
                case.path_parameters = {**(case.path_parameters or {}),
                                        **{name: known[name][0] for name in names}}
                if operation.label == REVIEW and mode == GenerationMode.POSITIVE:
                    case.body = {"label": known["label"][0]}  # the answer: "right"
            request = case.as_transport_kwargs(base_url=self.url)
            if operation.path.startswith("/admin/api/") and real < 2:
                # mostly an administrator's token; else schemathesis's (a 401)
                request["headers"]["Authorization"] = f"Bearer {self.token}"
            if request.get("files"):
                # schemathesis names file parts after their field or not at all: each
                # gets a name of a client's or an attacker's, and fields of theirs join.
                request["files"] = [
                    (field, (data.draw(NAMES), *part[1:]) if field in FILE_FIELDS else part)
                    for field, part in request["files"]] + [
                    (name, (None, value.encode())) for name, value in data.draw(EXTRA_FIELDS)]
            response = requests.request(**request, timeout=60)
            self.answers[operation.label, response.status_code] += 1
            try:
                case.validate_response(response, checks=CHECKS)
                assert response.status_code < 500 or response.status_code in self.allowed_5xx, (
                    f"{response.status_code}: {response.text[:500]}")
            except (AssertionError, FailureGroup) as exc:
                # The curl line above is the case before its names were set: what was sent.
                sent = response.request
                exc.add_note(f"Sent: {sent.method} {sent.url}\n{sent.headers}\n"
                             f"{(sent.body or b'')[:3000]!r}")
                raise

        try:
            fuzz()
        except Unsatisfiable:
            pass  # nothing invalid to make: every string is a valid id
        except (AssertionError, FailureGroup) as exc:  # collected, reported at the end
            notes = "\n".join(getattr(exc, "__notes__", []))
            self.failures[f"{operation.label} ({mode.value})"] = f"{str(exc)[:3000]}\n{notes}"

    def summary(self) -> str:
        return "\n".join(f"{label}: {status} x{count}"
                         for (label, status), count in sorted(self.answers.items()))

    def report(self) -> str:
        return "\n\n".join(f"{label}:\n{text}" for label, text in self.failures.items())


REVIEW = "POST /admin/api/predictions/{prediction_id}/review"
#: Operations that start real work: a training run (minutes of CPU), and serving
#: a version by hand. Their refusals are tested in tests/test_web_training.py.
NOT_FUZZED = {"POST /admin/api/training-runs", "POST /admin/api/models/{version}/promote"}
#: Examples per operation and mode; no shrinking (a failure is reported as found).
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=SEED is None, database=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck))
EXPLORE = seed(int(SEED)) if SEED else (lambda test: test)


def _fuzz_and_check(fuzzer: Fuzzer, succeeding: list[str]) -> None:
    """Fuzzes, and checks that the operations in `succeeding` answered 2xx at times:
    the fuzzer got past their checks too, not only into their refusals."""
    started = time.monotonic()
    fuzzer.run()
    print(f"{fuzzer.cases} cases in {time.monotonic() - started:.0f} s:\n{fuzzer.summary()}")
    assert not fuzzer.failures, fuzzer.report()
    for label in succeeding:
        assert any(status < 300 for (op, status) in fuzzer.answers if op == label), label


UPLOADS = ["POST /api/predictions", "POST /api/batches", "GET /admin/api/records"]


# Serving up on PostgreSQL, down on SQLite: each database is fuzzed once.
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_fuzzed_requests_get_documented_answers_and_never_a_server_error(
        serving, fuzzed_site, db, token):
    _fuzz_and_check(Fuzzer(fuzzed_site, db, token), [*UPLOADS, REVIEW, "GET /api/models"])


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_with_serving_down_the_only_server_error_is_a_documented_503(fuzzed_site, db, token):
    # The known prediction failed, so a review is refused (409); /api/models is a 503.
    _fuzz_and_check(Fuzzer(fuzzed_site, db, token, allowed_5xx=frozenset({503})), UPLOADS)
