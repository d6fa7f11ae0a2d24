"""`python -m serving` as a real child process, for the tests that need one.

The server picks a free port (--rest_api_port=0) and logs it; its output goes
to a file, so a chatty server can never block on a full pipe.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from core.serving_client import ServingClient, ServingRequestError

ROOT = Path(__file__).resolve().parent.parent
LISTENING = re.compile(r"Serving the REST API at http://127\.0\.0\.1:(\d+)")


class ServingProcess:
    def __init__(self, args: list[str], log_path: Path):
        self.args = args
        self.log_path = log_path
        self.process: subprocess.Popen | None = None
        self.url = ""

    def start(self, timeout: float = 120) -> ServingProcess:
        log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "serving", "--rest_api_host=127.0.0.1", "--rest_api_port=0",
             *self.args], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (match := LISTENING.search(self.log())):
                self.url = f"http://127.0.0.1:{match.group(1)}"
                return self
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not start in {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def client(self, model: str, **options) -> ServingClient:
        return ServingClient(self.url, model, **options)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, as an orchestrator stops it; returns the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


@contextmanager
def running(args: list[str], log_path: Path) -> Iterator[ServingProcess]:
    """A started server, stopped with SIGTERM at the end; it must exit cleanly."""
    server = ServingProcess(args, log_path).start()
    try:
        yield server
    finally:
        assert server.stop() == 0, server.log()[-2000:]


def available_versions(client: ServingClient) -> set[int]:
    try:
        return {int(s["version"]) for s in client.status() if s["state"] == "AVAILABLE"}
    except ServingRequestError:
        return set()
