"""The production proxy and the site behind it, as real child processes: Debian's
nginx on docker/nginx/default.conf.template (rendered as the official image
renders it) in front of gunicorn running the site on gunicorn.conf.py.

nginx runs as the test's own user, every path it writes (pid, logs, temporary
files) under the test's folder; both log to files, so neither can block on a
full pipe, and a failure shows their tails.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from core.settings import ROOT
from tests.factories import free_port, stop, wait_until

NGINX = Path("/usr/sbin/nginx")
TEMPLATE = ROOT / "docker" / "nginx" / "default.conf.template"
_VARIABLE = re.compile(r"\$\{([A-Za-z_]\w*)\}")


def template_variables(text: str) -> set[str]:
    """The ${NAME}s a template refers to: what the proxy's environment must set."""
    return set(_VARIABLE.findall(text))


def render(text: str, values: Mapping[str, str]) -> str:
    """envsubst as the official image's entrypoint runs it, limited to ${NAME}s (the
    template's only form). A name left unset would reach nginx as text: refused here."""
    missing = template_variables(text) - set(values)
    if missing:
        raise KeyError(f"the template needs {sorted(missing)}")
    return _VARIABLE.sub(lambda match: values[match.group(1)], text)


def main_config(folder: Path, site: Path) -> str:
    """The official image's /etc/nginx/nginx.conf, with this test's paths; the
    rendered template goes where the image's conf.d/*.conf goes, in `http`."""
    user = "user root root;" if os.geteuid() == 0 else ""  # else workers would be nobody
    temp = "\n".join(f"    {kind}_temp_path {folder / kind};"
                     for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""
{user}
worker_processes 1;
daemon off;
pid {folder / 'nginx.pid'};
error_log {folder / 'error.log'} notice;
events {{ worker_connections 1024; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log {folder / 'access.log'};
    sendfile on;
    keepalive_timeout 65;
{temp}
    include {site};
}}
"""


def write_config(folder: Path, values: Mapping[str, str]) -> Path:
    """The template rendered with `values`, and a main config around it; its path."""
    folder.mkdir(parents=True, exist_ok=True)
    site = folder / "default.conf"
    site.write_text(render(TEMPLATE.read_text(), values))
    main = folder / "nginx.conf"
    main.write_text(main_config(folder, site))
    return main


def check_config(folder: Path, values: Mapping[str, str]) -> subprocess.CompletedProcess:
    """`nginx -t` on the rendered template: nginx's own verdict on every directive."""
    main = write_config(folder, values)
    return subprocess.run([str(NGINX), "-t", "-p", str(folder), "-e", str(folder / "error.log"),
                           "-c", str(main)], capture_output=True, text=True, timeout=30)


def tail(path: Path, size: int = 3000) -> str:
    return path.read_text(errors="replace")[-size:] if path.exists() else f"({path} is empty)"


@contextmanager
def nginx(folder: Path, values: Mapping[str, str]) -> Iterator[int]:
    """nginx on the template rendered with `values` (PROXY_LISTEN a loopback
    address:port); yields the port, and stops it (SIGTERM: nginx's fast shutdown)."""
    main = write_config(folder, values)
    port = int(values["PROXY_LISTEN"].rpartition(":")[2])
    with (folder / "stderr.log").open("w") as out:
        process = subprocess.Popen(
            [str(NGINX), "-p", str(folder), "-e", str(folder / "error.log"), "-c", str(main)],
            stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: _answers(f"http://127.0.0.1:{port}/healthz", process), 30,
                   f"nginx on port {port}", detail=lambda: tail(folder / "error.log"))
        yield port
    finally:
        stop(process, timeout=10)


@contextmanager
def gunicorn(log: Path, env: Mapping[str, str] = {}) -> Iterator[int]:  # noqa: B006 (read only)
    """The site under `gunicorn 'frontend:create_app()'` (gunicorn.conf.py, read from
    the checkout) on a free loopback port, with os.environ updated by `env`; yields
    the port. The caller closes any connection it holds open before the end: a
    graceful stop waits for the requests in progress."""
    port = free_port()
    bind = f"127.0.0.1:{port}"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "frontend:create_app()"], cwd=ROOT,
            env=os.environ | dict(env) | {"WEB_BIND": bind}, stdout=out,
            stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: _answers(f"http://{bind}/healthz", process), 90,
                   f"gunicorn at {bind}", detail=lambda: tail(log))
        yield port
    finally:
        stop(process, timeout=40)


def _answers(url: str, process: subprocess.Popen) -> bool:
    if process.poll() is not None:
        raise AssertionError(f"{process.args[0]} exited with {process.returncode}")
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False
