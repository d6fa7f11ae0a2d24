"""The production proxy attacked as the security review attacked the bare site:
Debian's nginx on docker/nginx/default.conf.template (the file docker-compose.yml
mounts) in front of a real gunicorn running the site with 1 process of 2
threads, so that two stalled clients would be enough to take it down.

Every attack is on loopback only, bounded in connections and time. The stalled
clients come from addresses of their own (127.0.1.x: all of 127/8 is the
loopback), as a botnet's would, and the honest client from 127.0.0.1.

Without /usr/sbin/nginx (make test installs it) the module is skipped, unless
REQUIRE_BROWSER=1 (CI: browser and nginx must both be there) makes that an error.
"""

from __future__ import annotations

import os
import re
import socket
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from redis import Redis

from frontend.api import MAX_WAIT
from tests.factories import free_port, image_bytes, noise_png
from tests.proxy_process import NGINX, check_config, gunicorn, nginx, tail
from tests.test_compose import environment, load_compose

#: The site needs a database, any one: these tests are about the proxy.
SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

#: The proxy's environment in docker-compose.yml, as compose would pass it.
COMPOSED = environment(load_compose()["services"]["proxy"])
#: Small limits, so each attack is cheap: 1 MiB bodies, 4 quick uploads an address.
BODY_LIMIT = 2**20
LIMITS = {"MAX_REQUEST_BYTES": str(BODY_LIMIT), "PROXY_UPLOAD_RATE": "1r/m",
          "PROXY_UPLOAD_BURST": "3", "PROXY_RESOLVER": "127.0.0.1"}
STALLED = 200
DEADLINE = 10.0  # seconds an honest request may take while the site is attacked
HEADERS_THEN_NOTHING = b"GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: slow\r\n"
HALF_A_BODY = (b"POST /api/predictions HTTP/1.1\r\nHost: localhost\r\n"
               b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n"
               b'--b\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n'
               + b"\x89PNG" + b"\x00" * 500)


@pytest.fixture(scope="module", autouse=True)
def nginx_binary() -> Path:
    if NGINX.is_file():
        return NGINX
    missing = f"{NGINX} is missing (make nginx, or apt-get install nginx)"
    if os.environ.get("REQUIRE_BROWSER") == "1":
        pytest.fail(f"REQUIRE_BROWSER=1 but {missing}", pytrace=False)
    pytest.skip(f"{missing}; REQUIRE_BROWSER=1 makes this an error")


@dataclass
class Stack:
    site: int  # gunicorn's port
    proxy: int  # nginx's port, 0 when the test runs gunicorn alone
    site_log: Path

    def url(self, path: str, *, direct: bool = False) -> str:
        return f"http://127.0.0.1:{self.site if direct else self.proxy}{path}"

    def requests_seen(self, method: str, path: str) -> int:
        """How many such requests reached gunicorn: its access log, complete once the
        stack has stopped (a line is written after its answer is sent)."""
        return len(re.findall(rf'"{method} {re.escape(path)} HTTP', self.site_log.read_text()))


@contextmanager
def stack(tmp_path: Path, proxy: dict[str, str] | None) -> Iterator[Stack]:
    """gunicorn with the site (1 x 2 threads, behind TRUSTED_PROXIES=1 as in compose),
    and nginx in front unless `proxy` is None; its values override compose's."""
    log = tmp_path / "gunicorn.log"
    site_env = {"WEB_WORKERS": "1", "WEB_THREADS": "2", "TRUSTED_PROXIES": "1",
                "MAX_REQUEST_BYTES": str(BODY_LIMIT)}
    with ExitStack() as running:
        site = running.enter_context(gunicorn(log, site_env))
        port = 0
        if proxy is not None:
            values = COMPOSED | LIMITS | proxy | {
                "PROXY_UPSTREAM": f"127.0.0.1:{site}", "PROXY_LISTEN": f"127.0.0.1:{free_port()}"}
            port = running.enter_context(nginx(tmp_path / "nginx", values))
        yield Stack(site, port, log)


@contextmanager
def stalled(port: int, count: int, head: bytes, *, spread: bool) -> Iterator[list[socket.socket]]:
    """`count` connections that send `head` and then nothing; from 127.0.1.1, .2, ...
    when `spread`, else all from 127.0.0.1. All closed at the end."""
    sockets: list[socket.socket] = []
    try:
        for i in range(count):
            sock = socket.socket()
            sockets.append(sock)
            sock.settimeout(5)
            sock.bind((f"127.0.1.{i + 1}" if spread else "127.0.0.1", 0))
            sock.connect(("127.0.0.1", port))
            sock.sendall(head)
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def still_open(sock: socket.socket) -> bool:
    """Nothing came back and the peer has not closed: the connection is held."""
    sock.setblocking(False)
    try:
        sock.recv(1, socket.MSG_PEEK)  # an answer, or b"" for the peer's close
        return False
    except BlockingIOError:
        return True
    except OSError:
        return False


def closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    """Reads until the peer closes (an error page first is fine) or `timeout` passes."""
    sock.settimeout(timeout)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


def timed_get(url: str, timeout: float = DEADLINE) -> tuple[int, float]:
    started = time.monotonic()
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, time.monotonic() - started


def upload(url: str, seed: int = 0, data: bytes | None = None) -> requests.Response:
    image = data if data is not None else image_bytes(seed, "PNG")
    return requests.post(url, files={"image": (f"photo-{seed}.png", image, "image/png")},
                         timeout=DEADLINE)


# --- the attack on the bare site, and the same attack through the proxy ----------------

@SQLITE
def test_two_stalled_clients_take_the_bare_site_down(env, tmp_path: Path, capsys) -> None:
    """The reproduction: with gunicorn published directly, 2 connections that send
    half a request hold its 2 threads, and /healthz gets no answer."""
    with stack(tmp_path, proxy=None) as site:
        assert timed_get(site.url("/healthz", direct=True))[0] == 200
        started = time.monotonic()
        with stalled(site.site, 2, HEADERS_THEN_NOTHING, spread=False):
            time.sleep(0.5)  # both reach a thread
            with pytest.raises(OSError, match="timed out"):
                timed_get(site.url("/healthz", direct=True), timeout=3)
            blocked = time.monotonic() - started
        status, recovered = timed_get(site.url("/healthz", direct=True))
        assert status == 200  # the stalled pair alone was the cause
    with capsys.disabled():
        print(f"\n  direct, 2 stalled: /healthz no answer in {blocked:.1f} s; "
              f"after they went, {recovered * 1000:.0f} ms")


@SQLITE
@pytest.mark.parametrize("head", [HEADERS_THEN_NOTHING, HALF_A_BODY],
                         ids=["headers-then-nothing", "half-a-body"])
def test_the_proxy_absorbs_200_stalled_clients(env, tmp_path: Path, head: bytes,
                                               capsys) -> None:
    """200 stalled clients from 200 addresses, then /healthz and a real upload from
    another address answer at once, while nginx still holds all 200: none reached
    gunicorn's 2 threads."""
    with (stack(tmp_path, {"PROXY_CLIENT_TIMEOUT": "60s"}) as site,
          stalled(site.proxy, STALLED, head, spread=True) as clients):
        time.sleep(0.5)
        status, health = timed_get(site.url("/healthz"))
        assert status == 200
        started = time.monotonic()
        accepted = upload(site.url("/api/predictions"))
        took = time.monotonic() - started
        assert accepted.status_code == 202, accepted.text
        assert accepted.json()["status"] == "queued"
        held = sum(still_open(sock) for sock in clients)
        assert held == STALLED, f"only {held} of {STALLED} were still held"
    assert site.requests_seen("POST", "/api/predictions") == 1
    with capsys.disabled():
        print(f"\n  through nginx, {STALLED} stalled ({head[:4].decode().strip()}): "
              f"/healthz {health * 1000:.0f} ms, upload {took * 1000:.0f} ms")


@SQLITE
@pytest.mark.parametrize("head", [HEADERS_THEN_NOTHING, HALF_A_BODY],
                         ids=["headers-then-nothing", "half-a-body"])
def test_the_proxy_closes_stalled_clients_after_the_client_timeout(
        env, tmp_path: Path, head: bytes, capsys) -> None:
    with stack(tmp_path, {"PROXY_CLIENT_TIMEOUT": "2s"}) as site:
        started = time.monotonic()
        with stalled(site.proxy, STALLED, head, spread=True) as clients:
            closed = sum(closed_by_peer(sock, 2 + 20 - (time.monotonic() - started))
                         for sock in clients)
            took = time.monotonic() - started
        assert closed == STALLED, f"{STALLED - closed} stalled clients were never cut off"
        assert timed_get(site.url("/healthz"))[0] == 200
    with capsys.disabled():
        print(f"\n  PROXY_CLIENT_TIMEOUT=2s: {STALLED} stalled "
              f"({head[:4].decode().strip()}) all closed within {took:.1f} s")


# --- what the proxy passes on -----------------------------------------------------------

def login_attempts(url: str, count: int, spoof: str) -> list[requests.Response]:
    """Wrong passwords for different user names, each request claiming another
    X-Forwarded-For address (`spoof` and the attempt's number): `count` of them, or
    fewer if one is refused with 429."""
    browser = requests.Session()
    page = browser.get(url, timeout=DEADLINE)
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page.text).group(1)
    answers = []
    for i in range(count):
        answers.append(browser.post(
            url, data={"username": f"guess-{spoof}-{i}", "password": "wrong",
                       "csrf_token": token},
            headers={"X-Forwarded-For": f"{spoof}.{i}"}, timeout=DEADLINE))
        if answers[-1].status_code == 429:
            break
    return answers


@SQLITE
def test_a_client_cannot_choose_the_address_the_site_sees(env, tmp_path: Path) -> None:
    """The site trusts one proxy's X-Forwarded-For (TRUSTED_PROXIES=1). Through nginx,
    which overwrites it, the login limit per address (frontend/admin/auth.py) holds
    however the client rotates it; sent straight to gunicorn, the same rotation
    escapes the limit, which shows what the proxy prevents."""
    with stack(tmp_path, {}) as site:
        proxied = login_attempts(site.url("/admin/login"), 40, spoof="1.2.3")
        direct = login_attempts(site.url("/admin/login", direct=True), len(proxied) + 2,
                                spoof="10.9.0")
    refused = proxied[-1]
    assert refused.status_code == 429, [r.status_code for r in proxied]
    assert "X-RateLimit-Limit" in refused.headers  # the site's limit (Flask-Limiter), not nginx's
    assert 429 not in [r.status_code for r in direct]
    keys = [key.decode() for key in Redis.from_url(env["REDIS_URL"]).keys("LIMITS*")]
    assert any("127.0.0.1" in key for key in keys), keys
    assert any("10.9.0." in key for key in keys), keys  # spoofed straight to gunicorn: believed
    assert not any("1.2.3." in key for key in keys), keys  # spoofed through nginx: not


@SQLITE
def test_a_body_over_the_limit_is_refused_by_the_proxy(env, tmp_path: Path) -> None:
    with stack(tmp_path, {}) as site:
        assert upload(site.url("/api/predictions"), 1).status_code == 202
        big = noise_png(700)  # about 1.5 MB: over the 1 MiB MAX_REQUEST_BYTES
        assert len(big) > BODY_LIMIT
        refused = upload(site.url("/api/predictions"), 2, data=big)
        assert refused.status_code == 413
        assert str(BODY_LIMIT) in refused.json()["error"]
    assert site.requests_seen("POST", "/api/predictions") == 1  # it never reached the site


@SQLITE
def test_an_upload_burst_gets_429_from_the_proxy_while_the_site_answers(
        env, tmp_path: Path) -> None:
    """Uploads: 1 a minute an address, after a burst of 3 (this test's limits)."""
    with stack(tmp_path, {}) as site:
        answers = [upload(site.url("/api/predictions"), seed) for seed in range(10)]
        codes = [r.status_code for r in answers]
        assert 202 in codes and 429 in codes, codes
        assert set(codes) == {202, 429}, codes
        for refused in (r for r in answers if r.status_code == 429):
            assert "too many requests" in refused.json()["error"]
            assert refused.headers["Retry-After"]
            assert "X-RateLimit-Limit" not in refused.headers  # nginx's, not the site's
        assert timed_get(site.url("/healthz"))[0] == 200
        # Other requests from the same address are not uploads: not limited by them.
        assert requests.get(site.url("/api/openapi.json"), timeout=DEADLINE).status_code == 200
    assert site.requests_seen("POST", "/api/predictions") == codes.count(202)


def test_the_composed_config_passes_nginx_own_check(tmp_path: Path) -> None:
    """The template with docker-compose.yml's values exactly, as the image renders it."""
    checked = check_config(tmp_path, COMPOSED)
    assert checked.returncode == 0, checked.stderr + tail(tmp_path / "error.log")


def test_the_rendered_config_has_the_guards(tmp_path: Path) -> None:
    """What the attacks above rely on is in the file compose renders, with compose's values."""
    check_config(tmp_path, COMPOSED)
    text = (tmp_path / "default.conf").read_text()
    for directive in ("client_header_timeout", "client_body_timeout", "send_timeout",
                      "keepalive_timeout"):
        assert re.search(rf"^\s*{directive} {COMPOSED['PROXY_CLIENT_TIMEOUT']};", text, re.M)
    assert f"client_max_body_size {COMPOSED['MAX_REQUEST_BYTES']};" in text
    assert re.search(r"^\s*proxy_set_header X-Forwarded-For \$remote_addr;", text, re.M)
    assert re.search(r"^\s*server_tokens off;", text, re.M)
    read_timeout = int(re.search(r"proxy_read_timeout (\d+)s;", text).group(1))
    assert read_timeout > MAX_WAIT  # the long poll ends before nginx gives up on it
