"""The site in a real browser: Debian's Chromium, driven by Playwright, against
gunicorn started as a child process (gunicorn.conf.py, 2 processes), a real
`python -m worker` and the embedded Serving on the shapes model.

Never downloads a browser (no `playwright install`): without /usr/bin/chromium
the module is skipped, unless REQUIRE_BROWSER=1 (CI), which makes it an error.

Only SQLite: these tests exercise pages and scripts, which do not depend on the
database, and they are slow; test_web_* run the same queries on both databases.

Each page visited is saved as a full-page screenshot under $TEST_ARTIFACTS
(default var/test-artifacts/screenshots), one folder per test, and every step
checks that no script error and no console error has happened so far.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from core.settings import ROOT
from tests.factories import (
    SHAPES,
    add_prediction,
    gunicorn,
    photo_bytes,
    photo_file,
    stored_prediction,
    wait_until,
    zip_bytes,
)

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, Page

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS")
                 or ROOT / "var" / "test-artifacts" / "screenshots")
TIMEOUT_MS = 20_000  # one step on 2 slow, shared cores
RESULT_TIMEOUT_MS = 60_000  # a label or a whole batch appearing (includes a worker's start)

# The batch test: which progress each page load rendered and each script update set.
# Kept in sessionStorage, so the record survives the reload poll.js does at the end.
PROGRESS_WATCH = """
addEventListener("DOMContentLoaded", () => {
  const bar = document.getElementById("progress");
  if (!bar) return;
  const note = (by) => {
    const seen = JSON.parse(sessionStorage.getItem("progress-seen") || "[]");
    seen.push({by, value: bar.getAttribute("value"), max: bar.getAttribute("max")});
    sessionStorage.setItem("progress-seen", JSON.stringify(seen));
  };
  note("page");
  new MutationObserver(() => note("script")).observe(
    bar, {attributes: true, attributeFilter: ["value", "max"]});
});
"""

# Every Content-Security-Policy violation the browser sees, whether or not it also
# logs one to the console: what was blocked, by which directive, from where.
CSP_WATCH = """
document.addEventListener("securitypolicyviolation", (event) => {
  window.reportCspViolation(
    `${event.effectiveDirective} blocked ${event.blockedURI || "inline code"} ` +
    `(${event.sourceFile || location.href}:${event.lineNumber}: ${event.sample || ""})`);
}, true);
"""

# One database is enough here (see the docstring): every test runs on SQLite only.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture(scope="session", autouse=True)
def chromium() -> Path:
    """Debian's Chromium and Playwright, or a skip (an error under REQUIRE_BROWSER=1):
    an autouse session fixture runs first, before the model is trained."""
    missing = None
    if not CHROMIUM.is_file():
        missing = f"no browser: {CHROMIUM} is missing (apt-get install chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError as exc:
            missing = f"Playwright for Python is not installed ({exc})"
    if missing and os.environ.get("REQUIRE_BROWSER") == "1":
        pytest.fail(f"REQUIRE_BROWSER=1 but {missing}", pytrace=False)
    if missing:
        pytest.skip(f"{missing}; REQUIRE_BROWSER=1 makes this an error")
    return CHROMIUM


@pytest.fixture(scope="module")
def browser(chromium: Path) -> Iterator[Browser]:
    """Chromium, headless, for this module's tests; never a downloaded browser."""
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)
    args = ["--disable-dev-shm-usage"]
    if os.geteuid() == 0:
        args.append("--no-sandbox")  # Chromium's sandbox refuses to run as root
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(chromium), headless=True,
                                              args=args)
        yield launched
        launched.close()


@pytest.fixture
def site(request: pytest.FixtureRequest, env: dict[str, str], serving, tmp_path: Path,
         monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The site under gunicorn on a free port, with `env`'s settings (and any extra
    ones given as the fixture's indirect parameter, which the workers see too)."""
    for key, value in getattr(request, "param", {}).items():
        monkeypatch.setenv(key, value)
    with gunicorn(tmp_path) as url:
        yield url


@pytest.fixture
def site_without_serving(env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """The site alone, for back-office pages over records written straight into the
    database: no model is trained and no Serving started."""
    with gunicorn(tmp_path) as url:
        yield url


@pytest.fixture
def site_with_versions(env: dict[str, str], rollout_serving, tmp_path: Path) -> Iterator[str]:
    """The site on a Serving with three versions loaded (tests/web_fixtures.py)."""
    with gunicorn(tmp_path) as url:
        yield url


@dataclass
class Visit:
    """A browser tab on the site that screenshots each step and collects script errors."""

    page: Page
    folder: Path
    errors: list[str] = field(default_factory=list)
    steps: int = 0
    checked: int = 0  # errors already reported by a step

    def on_console(self, message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:  # an error or, report-only, a warning
            self.errors.append(f"CSP violation reported on {self.page.url}: {message.text}")
        elif message.type == "error":
            self.errors.append(f"console error on {self.page.url}: {message.text} "
                               f"({message.location.get('url')}:"
                               f"{message.location.get('lineNumber')})")

    def check(self, step: str) -> None:
        """Saves a full-page screenshot of the page as it is, then fails if a script
        error, a console error or a CSP violation has happened since the test began."""
        self.steps += 1
        self.page.screenshot(path=self.folder / f"{self.steps:02d}-{step}.png", full_page=True)
        self.checked = len(self.errors)
        assert not self.errors, f"script errors by step {step!r}:\n" + "\n".join(self.errors)


@contextmanager
def opened_tab(browser: Browser, site: str, request: pytest.FixtureRequest) -> Iterator[Visit]:
    """A fresh browser context on `site`, screenshotted at the end; script errors
    the last step did not report fail the test then."""
    context = browser.new_context(base_url=site, accept_downloads=True,
                                  viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    # Playwright's own binding and init script: the page's CSP does not apply to them.
    context.expose_function("reportCspViolation",
                            lambda text: tab.errors.append(f"CSP violation on {page.url}: {text}"))
    context.add_init_script(CSP_WATCH)
    page = context.new_page()
    folder = ARTIFACTS / request.node.originalname
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    tab = Visit(page, folder)
    page.on("pageerror", lambda exc: tab.errors.append(f"uncaught on {page.url}: {exc}"))
    page.on("console", tab.on_console)
    yield tab
    try:
        page.screenshot(path=folder / f"{tab.steps + 1:02d}-last.png", full_page=True)
    finally:
        context.close()
    late = tab.errors[tab.checked:]
    assert not late, "script errors after the last step:\n" + "\n".join(late)


@pytest.fixture
def visit(browser: Browser, site: str, request: pytest.FixtureRequest) -> Iterator[Visit]:
    with opened_tab(browser, site, request) as tab:
        yield tab


@pytest.fixture
def visit_without_serving(browser: Browser, site_without_serving: str,
                          request: pytest.FixtureRequest) -> Iterator[Visit]:
    """A tab on the site alone (`site_without_serving`)."""
    with opened_tab(browser, site_without_serving, request) as tab:
        yield tab


@pytest.fixture
def visit_with_versions(browser: Browser, site_with_versions: str,
                        request: pytest.FixtureRequest) -> Iterator[Visit]:
    with opened_tab(browser, site_with_versions, request) as tab:
        yield tab


def table_rows(page: Page, selector: str) -> list[list[str]]:
    """The cells' text of a table's rows, header row left out."""
    rows = page.locator(f"{selector} tr").all()
    return [[cell.inner_text().strip() for cell in row.locator("td").all()] for row in rows[1:]]


def test_the_csp_detector_catches_inline_script_and_style_the_site_refuses(
        visit_without_serving: Visit, admin_user):
    """The headers reach the browser and the browser enforces them: an inline
    script and a style attribute, injected into a page of the site, are blocked
    and reported; the pages themselves (the login, an admin page) report nothing."""
    from playwright.sync_api import expect

    visit = visit_without_serving
    page = visit.page
    name, password = admin_user
    response = page.goto("/admin/login?next=/admin/sessions")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Your sessions")).to_be_visible()
    visit.check("sessions")

    page.evaluate("""() => {
        const script = document.createElement("script");
        script.textContent = "document.body.dataset.inlineRan = 'yes'";
        document.body.append(script);
        document.querySelector("h1").setAttribute("style", "color: red");
    }""")
    def reported(directive: str) -> bool:
        page.wait_for_timeout(100)  # lets Playwright deliver the binding's calls
        return any("CSP violation on" in e and directive in e for e in visit.errors)

    wait_until(lambda: reported("script-src") and reported("style-src"), 10,
               "the injected script and style reported", detail=lambda: "\n".join(visit.errors))
    assert page.evaluate("document.body.dataset.inlineRan") is None  # it never ran
    visit.errors.clear()  # the violations were this test's own doing
    page.reload()
    expect(page.get_by_role("button", name="Log out everywhere")).to_be_visible()
    visit.check("reloaded-clean")


def test_an_uploaded_photo_shows_its_label_and_model_version(
        visit: Visit, request: pytest.FixtureRequest, trained, tmp_path: Path):
    from playwright.sync_api import expect

    page = visit.page
    picture = photo_file(tmp_path / "photos", "circle", 7)
    page.goto("/")
    expect(page.get_by_role("heading", name="What is in your photo?")).to_be_visible()
    visit.check("upload-page")

    page.get_by_label("Drop images here, or click to choose").set_input_files(picture)
    expect(page.get_by_role("img", name=picture.name)).to_be_visible()  # upload.js's preview
    visit.check("preview")

    page.get_by_role("button", name="Classify").click()
    page.wait_for_url(re.compile(r"/p/[^/]+$"))
    expect(page.get_by_role("heading", name=picture.name)).to_be_visible()
    # No worker runs yet, so the page waits; poll.js's reload cannot land mid-screenshot.
    expect(page.locator("#waiting")).to_be_visible()
    visit.check("result-page")

    # poll.js long-polls the API and reloads the page when the worker is done.
    request.getfixturevalue("worker_process")
    expect(page.locator("#label")).to_contain_text("circle", timeout=RESULT_TIMEOUT_MS)
    expect(page).to_have_title(re.compile(rf"^circle · {re.escape(picture.name)}"))
    expect(page.get_by_text(re.compile(rf"Model version {trained.version} · answered in"))
           ).to_be_visible()
    expect(page.locator("#topk li")).to_have_count(len(SHAPES))
    expect(page.locator("#waiting")).to_have_count(0)
    visit.check("result-done")

    page.get_by_role("link", name="Your history").click()
    expect(page.get_by_role("heading", name="Your recent images")).to_be_visible()
    newest = table_rows(page, "table.records")[0]
    assert newest[1] == picture.name and newest[3:5] == ["done", "circle"], newest
    visit.check("history")


@pytest.mark.parametrize("site", [{"CHUNK_SIZE": "4"}], indirect=True, ids=["chunks-of-4"])
def test_a_batch_shows_its_progress_up_to_100_percent_and_counts_per_class(
        visit: Visit, request: pytest.FixtureRequest, tmp_path: Path):
    from playwright.sync_api import expect

    page = visit.page
    page.add_init_script(PROGRESS_WATCH)
    pictures = [photo_file(tmp_path / "photos", kind, seed, suffix)
                for seed, suffix in enumerate([".jpg", ".png", ".webp", ".gif"])
                for kind in SHAPES]
    notes = tmp_path / "photos" / "notes.txt"
    notes.write_text("not an image")
    page.goto("/")
    page.get_by_label("Drop images here, or click to choose").set_input_files(
        [*pictures, notes])
    expect(page.locator("#previews figure")).to_have_count(len(pictures) + 1)
    expect(page.locator("#previews img")).to_have_count(len(pictures))
    visit.check("previews")

    page.get_by_role("button", name="Classify").click()
    page.wait_for_url(re.compile(r"/batches/[^/]+$"))
    batch_id = page.url.rsplit("/", 1)[1]
    bar = page.get_by_role("progressbar")
    # No worker runs yet: the page starts at 0 of 12, and lists what it refused.
    expect(bar).to_have_attribute("max", "12")
    expect(bar).to_have_attribute("value", "0")
    expect(page.locator("#progress-text")).to_have_text("0 of 12 done")
    expect(page.get_by_role("heading", name="Not accepted")).to_be_visible()
    expect(page.get_by_text(re.compile(r"^notes\.txt: "))).to_be_visible()
    visit.check("batch-queued")

    request.getfixturevalue("worker_process")
    expect(page.locator("#batch")).to_have_attribute("data-complete", "yes",
                                                     timeout=RESULT_TIMEOUT_MS)
    expect(bar).to_have_attribute("value", "12")
    expect(bar).to_have_attribute("max", "12")
    expect(page.locator("#progress-text")).to_have_text("12 of 12 done")
    visit.check("batch-complete")

    seen: list[dict[str, Any]] = page.evaluate(
        "JSON.parse(sessionStorage.getItem('progress-seen') || '[]')")
    values = [int(float(s["value"])) for s in seen]
    assert seen[0] == {"by": "page", "value": "0", "max": "12"}, seen
    assert values == sorted(values), f"the bar went backwards: {seen}"
    script = [s for s in seen if s["by"] == "script"]
    assert script and int(float(script[-1]["value"])) == 12, f"poll.js never set 12: {seen}"
    assert seen[-1] == {"by": "page", "value": "12", "max": "12"}, seen
    print("progress seen:", [f"{s['by']} {s['value']}/{s['max']}" for s in seen])

    classes = {label: int(n) for label, n in table_rows(page, "#classes")}
    assert sum(classes.values()) == 12 and set(classes) <= set(SHAPES), classes
    api = page.request.get(f"/api/batches/{batch_id}").json()
    assert classes == api["labels"] and api["complete"], api
    images = table_rows(page, "table.records")
    assert len(images) == 12 and {row[2] for row in images} == {"done"}, images
    right = sum(row[1].split("-")[0] == row[3] for row in images)
    assert right >= 10, images  # the shapes model is nearly always right


def test_a_zip_becomes_a_batch_named_for_it_that_lists_the_files_it_refused(
        visit: Visit, request: pytest.FixtureRequest, tmp_path: Path):
    from playwright.sync_api import expect

    page = visit.page
    archive = tmp_path / "photos.zip"
    archive.write_bytes(zip_bytes({
        **{f"photos/{kind}-{seed}.jpg": photo_file(tmp_path / "photos", kind, seed).read_bytes()
           for seed, kind in enumerate(SHAPES, start=30)},
        "photos/notes.txt": b"not an image"}))
    page.goto("/")
    page.get_by_label("or a .zip of images").set_input_files(archive)
    visit.check("zip-chosen")

    page.get_by_role("button", name="Classify").click()
    page.wait_for_url(re.compile(r"/batches/[^/]+$"))
    expect(page.get_by_role("heading", name="Batch photos.zip")).to_be_visible()
    expect(page.get_by_role("progressbar")).to_have_attribute("max", "3")
    refused = page.get_by_role("listitem").filter(has_text="notes.txt")
    expect(refused).to_contain_text("not an image of a type we take")
    visit.check("zip-batch-queued")

    request.getfixturevalue("worker_process")
    expect(page.locator("#batch")).to_have_attribute("data-complete", "yes",
                                                     timeout=RESULT_TIMEOUT_MS)
    expect(page.locator("#progress-text")).to_have_text("3 of 3 done")
    assert sum(int(n) for _, n in table_rows(page, "#classes")) == 3
    visit.check("zip-batch-complete")

    text = refused.inner_text()
    assert text.startswith("photos/notes.txt: not an image") and text.count("notes.txt") == 1, \
        f"the refused file reads {text!r}"


def _classified(page: Page, picture: Path) -> dict[str, Any]:
    created = page.request.post("/api/predictions", multipart={"image": {
        "name": picture.name, "mimeType": "image/jpeg", "buffer": picture.read_bytes()}})
    assert created.status == 202, created.text()
    url = created.json()["url"]
    deadline = time.monotonic() + RESULT_TIMEOUT_MS / 1000
    while time.monotonic() < deadline:  # each call is a long poll of up to 10 s
        body = page.request.get(f"{url}?wait=10", timeout=30_000).json()
        if body["status"] in ("done", "failed"):
            assert body["status"] == "done", body
            return body
    raise AssertionError(f"{picture.name} was not classified in time")


def test_an_admin_corrects_a_label_and_exports_the_reviewed_set(
        visit: Visit, worker_process, admin_user, trained, tmp_path: Path):
    from playwright.sync_api import expect

    page = visit.page
    name, password = admin_user
    pictures = {kind: photo_file(tmp_path / "photos", kind, seed)
                for seed, kind in enumerate(SHAPES, start=20)}
    results = {kind: _classified(page, picture) for kind, picture in pictures.items()}
    target, found = pictures["triangle"], results["triangle"]
    truth = next(kind for kind in SHAPES if kind != found["label"])

    page.goto("/admin/")
    expect(page.get_by_role("heading", name="Administrator login")).to_be_visible()
    visit.check("login")
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="All records")).to_contain_text("3 match")
    expect(page.get_by_role("button", name=f"Log out {name}")).to_be_visible()
    visit.check("records")

    page.get_by_label("Label").select_option(found["label"])
    page.get_by_label("Source").select_option("api")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(rf"label={found['label']}.*source=api"))
    expect(page.get_by_role("link", name=target.name)).to_be_visible()
    for row in table_rows(page, "#records"):
        assert row[2] == "api" and row[4] == found["label"], row
    visit.check("records-filtered")

    page.get_by_role("link", name=target.name).click()
    expect(page.get_by_role("heading", name=target.name)).to_be_visible()
    expect(page.locator("#status")).to_have_text("done")
    visit.check("record")

    page.get_by_role("radio", name="wrong").check()
    page.get_by_label("True label").fill(truth)
    page.get_by_role("button", name="Save review").click()
    expect(page.get_by_role("status")).to_have_text(f"marked wrong: {truth}")
    expect(page.get_by_text(f"wrong, true label {truth}, by {name}")).to_be_visible()
    expect(page.get_by_role("radio", name="wrong")).to_be_checked()
    visit.check("reviewed")

    page.get_by_role("link", name="All records").click()
    page.get_by_label("Reviewed").select_option("wrong")
    page.get_by_role("button", name="Filter").click()
    expect(page.get_by_role("heading", name="All records")).to_contain_text("1 match")
    assert [row[7] for row in table_rows(page, "#records")] == [f"wrong: {truth}"]
    visit.check("records-reviewed")

    with page.expect_download() as download_info:
        page.get_by_role("link", name="Export reviewed images as a dataset").click()
    download = download_info.value
    assert download.suggested_filename == "reviewed-dataset.zip"
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    data = target.read_bytes()
    with zipfile.ZipFile(saved) as archive:
        assert archive.namelist() == [
            f"dataset/{truth}/{hashlib.sha256(data).hexdigest()[:16]}.jpg"]
        assert archive.read(archive.namelist()[0]) == data

    page.get_by_role("link", name="Statistics").click()
    expect(page.get_by_role("heading", name="Statistics", exact=True)).to_be_visible()
    expect(page.get_by_text(re.compile(r"^3 predictions: "))).to_be_visible()
    expect(page.locator("#queue")).to_contain_text("1 live worker(s)")
    for chart in ["Predictions per class", "Uploads per day", "Confidence of the top label",
                  "Accuracy on reviewed records per model version (%)"]:
        expect(page.get_by_role("img", name=chart)).to_be_visible()
    accuracy = page.get_by_role("img", name="Accuracy on reviewed records per model version")
    expect(accuracy).to_contain_text(f"v{trained.version} (1 reviewed)")
    expect(accuracy).to_contain_text("0.0%")
    visit.check("stats")

    page.get_by_role("link", name="Models").click()
    expect(page.locator("#versions")).to_contain_text("AVAILABLE")
    visit.check("models")

    page.get_by_role("button", name=f"Log out {name}").click()
    expect(page.get_by_role("heading", name="Administrator login")).to_be_visible()
    visit.check("logged-out")


def test_an_admin_reviews_photos_with_the_keyboard_only(
        visit_without_serving: Visit, admin_user, db, store):
    """Digit keys pick the class, Enter saves it and brings the next photo, with no
    page load; the figure printed is the reviews per minute this achieved."""
    from playwright.sync_api import expect

    visit = visit_without_serving
    page = visit.page
    name, password = admin_user
    classes = ["apple", "pear", "plum"]  # keys 1, 2, 3: the classes sorted
    confidences = [0.95, 0.45, 0.9, 0.35, 0.85, 0.55, 0.99, 0.8]
    ids = []
    for seed, confidence in enumerate(confidences):
        label = classes[seed % 3]
        others = [c for c in classes if c != label]
        rest = round((1 - confidence) / 2, 6)
        ids.append(add_prediction(
            db, store, seed, label=label, confidence=confidence, margin=confidence - rest,
            top_k=[{"label": label, "score": confidence}, {"label": others[0], "score": rest},
                   {"label": others[1], "score": rest}]))
    # The unsure ones (under 0.6) first, least sure first; then the newest.
    least_sure = ids[3]

    page.goto("/admin/login?next=/admin/review")
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    reviewer = page.locator("#reviewer")
    expect(reviewer).to_have_attribute("data-record", least_sure)
    expect(page.locator("#queue-total")).to_have_text(f"{len(ids)} to review")
    expect(page.get_by_role("radio", name="1 apple")).to_have_attribute("aria-checked", "true")
    visit.check("review-queue")

    chosen: dict[str, str] = {}
    loads = page.evaluate("performance.getEntriesByType('navigation').length")
    started = time.monotonic()
    for turn in range(len(ids)):
        record = reviewer.get_attribute("data-record")
        label = page.locator("#review-answer").inner_text().split()[3]  # "The model says X"
        if turn % 2:  # every other photo: the model was wrong, press another class's key
            label = classes[(classes.index(label) + 1) % 3]
            page.keyboard.press(str(classes.index(label) + 1))
            expect(page.get_by_role("radio", name=f"{classes.index(label) + 1} {label}")
                   ).to_have_attribute("aria-checked", "true")
        page.keyboard.press("Enter")
        chosen[record] = label
        if turn < len(ids) - 1:
            expect(reviewer).not_to_have_attribute("data-record", record)
            # Polled from here: wait_for_function evals its predicate in the page,
            # which the site's CSP (no 'unsafe-eval') refuses.
            wait_until(lambda: page.evaluate("document.getElementById('review-photo').complete"),
                       10, "the next photo to load")
    expect(page.locator("#review-empty")).to_be_visible()
    elapsed = time.monotonic() - started
    print(f"keyboard review: {len(ids)} photos in {elapsed:.2f} s, "
          f"{len(ids) / elapsed * 60:.0f} reviews per minute")
    assert page.evaluate("performance.getEntriesByType('navigation').length") == loads
    visit.check("review-done")

    assert set(chosen) == set(ids)
    for prediction_id, label in chosen.items():
        p = stored_prediction(db, prediction_id)
        assert (p.true_label, p.correct, p.reviewed_by) == (label, label == p.label, name), p.id
    counts = {cls: int(n) for cls, n in table_rows(page, "#review-counts")}
    assert counts == {cls: list(chosen.values()).count(cls) for cls in set(chosen.values())}
    expect(page.locator("#review-session")).to_have_text(str(len(ids)))


def test_an_admin_starts_a_training_run_and_cancels_it_from_the_models_page(
        visit_without_serving: Visit, admin_user, db, store):
    """models.js: Retrain posts to the runs API with the page's CSRF token, the
    active run's panel follows it, Cancel ends it and the page shows it ended."""
    from playwright.sync_api import expect
    from sqlalchemy import select

    from core.db import TrainingRun, utcnow

    visit = visit_without_serving
    page = visit.page
    name, password = admin_user
    add_prediction(db, store, 1, correct=True, true_label="apple", reviewed_at=utcnow(),
                   reviewed_by=name)
    page.goto("/admin/login?next=/admin/models")
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_text("No run yet.")).to_be_visible()
    visit.check("models")

    page.get_by_role("button", name="Retrain").click()
    expect(page.locator("#run-status")).to_have_text("queued")
    expect(page.get_by_role("button", name="Retrain")).to_be_disabled()
    visit.check("run-queued")
    with db.session() as session:
        run = session.scalar(select(TrainingRun))
        assert (run.status, run.requested_by) == ("queued", name)

    page.get_by_role("button", name="Cancel the run").click()  # the page reloads when it ends
    expect(page.locator("#runs")).to_contain_text("cancelled before it started")
    expect(page.get_by_role("button", name="Retrain")).to_be_enabled()
    visit.check("run-cancelled")
    with db.session() as session:
        assert session.get(TrainingRun, run.id).status == "cancelled"


def test_the_loop_in_the_browser_review_by_keyboard_retrain_and_the_new_version_serves(
        loop, visit: Visit, admin_user, db, store):
    """The whole loop from the back office: photos reviewed with the keyboard, a
    run started from the models page whose progress the page follows, and the
    version it promoted on that page, served."""
    from playwright.sync_api import expect

    page = visit.page
    name, password = admin_user
    kinds = ["circle", "square", "triangle"]
    for i in range(6):
        kind = kinds[i % 3]
        others = [k for k in kinds if k != kind]
        add_prediction(db, store, image=photo_bytes(kind, 7000 + i), label=kind,
                       confidence=0.7, margin=0.55,
                       top_k=[{"label": kind, "score": 0.7}, {"label": others[0], "score": 0.15},
                              {"label": others[1], "score": 0.15}])
    page.goto("/admin/login?next=/admin/review")
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#queue-total")).to_have_text("6 to review")
    for _ in range(6):  # the model was right each time: Enter confirms its label
        record = page.locator("#reviewer").get_attribute("data-record")
        page.keyboard.press("Enter")
        expect(page.locator("#reviewer")).not_to_have_attribute("data-record", record or "")
    expect(page.locator("#review-empty")).to_be_visible()
    visit.check("reviewed")

    page.goto("/admin/models")
    page.get_by_role("button", name="Retrain").click()
    expect(page.locator("#run-status")).to_have_text("running", timeout=RESULT_TIMEOUT_MS)
    seen = set()
    while page.locator("#active-run").is_visible():
        seen.add(page.locator("#run-phase").inner_text())
        page.wait_for_timeout(250)
        if len(seen) > 1:
            visit.check("run-progress")
            break
    assert page.locator("#run-progress").evaluate("bar => bar.value") >= 0
    # The page reloads by itself when the run ends.
    expect(page.locator("#runs")).to_contain_text("promoted", timeout=300_000)
    visit.check("run-promoted")
    row = page.locator("#versions tr:has(td:first-child:text-is('2'))")
    for _ in range(60):  # Serving polls the folder every half second
        if "AVAILABLE" in row.inner_text():
            break
        page.wait_for_timeout(500)
        page.reload()
    expect(row).to_contain_text("AVAILABLE")
    expect(page.locator("#version-2")).to_contain_text("6 reviewed")
    visit.check("new-version")


def test_an_admin_starts_a_canary_on_the_models_page_and_watches_it_against_stable(
        visit_with_versions: Visit, admin_user, db, store):
    """rollout.js: the form PUTs the state with the page's CSRF token; a version that
    is not loaded is refused with the API's words; with a canary running, the page
    compares it with stable, and "Stop the canary" takes its share away."""
    from playwright.sync_api import expect

    visit = visit_with_versions
    page = visit.page
    name, password = admin_user
    page.goto("/admin/login?next=/admin/models")
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#rollout-state")).to_contain_text("Mode newest")
    visit.check("newest")

    form = page.locator("#rollout-form")
    form.get_by_label("Mode").select_option("pinned")
    form.get_by_label("Stable").fill("1")
    form.get_by_label("Canary", exact=True).fill("9")
    form.get_by_label("Canary share (%)").fill("20")
    form.get_by_role("button", name="Apply").click()
    expect(page.locator("#rollout-message")).to_contain_text("version 9 is not AVAILABLE")
    assert [e for e in visit.errors if "409 (CONFLICT)" in e]  # the browser's note of it
    visit.errors.clear()
    visit.check("refused")

    form.get_by_label("Canary", exact=True).fill("2")
    form.get_by_role("button", name="Apply").click()  # the page reloads with the new state
    expect(page.locator("#rollout-state")).to_contain_text(
        "version 2 the canary with 20.0% of predictions")
    expect(page.locator("#canary-vs-stable")).to_be_visible()
    for seed in range(4):
        add_prediction(db, store, seed, model_version=2, model_role="canary", label="circle",
                       correct=seed == 0, true_label="square")
        add_prediction(db, store, 10 + seed, model_version=1, model_role="stable",
                       label="square", correct=True, true_label="square")
    page.reload()
    comparison = page.locator("#canary-vs-stable")
    expect(comparison.locator("tr", has_text="Accuracy on reviewed")).to_contain_text(
        "25.0%")
    expect(comparison.locator("tr", has_text="Accuracy difference")).to_contain_text(
        "-75.0 points")
    expect(page.locator("#version-figures")).to_contain_text("canary")
    visit.check("canary-running")

    page.get_by_role("button", name="Stop the canary").click()
    expect(page.locator("#rollout-state")).not_to_contain_text("canary with")
    expect(page.locator("#rollout-events")).to_contain_text("version 1 is stable")
    visit.check("canary-stopped")
