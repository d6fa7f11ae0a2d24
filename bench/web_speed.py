"""Upload-to-result latency and batch throughput through the whole chain:
gunicorn site -> Redis/RQ -> worker processes -> embedded Serving -> database.

The newest version of the model (make train) is served with
serving/batching.config; the site runs under gunicorn with gunicorn.conf.py,
and `--workers` RQ workers (default 2) take the jobs. Measured:

- latency: one fruit photo at a time on the idle system, from the start of
  POST /api/predictions to the answer of the long poll GET ?wait=10;
- batch: 500 photos in one POST /api/batches, until the batch is complete;
- memory: each process's resident set after the batch, and its peak;
- beside it, Serving alone: the same photos sent straight to Serving by the
  same number of clients, chunk by chunk as the workers send them, before and
  after the batch run. Target: the batch at least 70% of Serving alone.

Prints figures, asserts nothing.

    .venv/bin/python bench/web_speed.py [--model-dir models/classifier] [--workers 2]
        [--database-url URL] [--images 500]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import requests
from redis import Redis
from serving_speed import embedded, photos

from core.serving_client import ServingClient
from core.settings import ROOT, get_settings

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def memory_mb(pid: int) -> tuple[float, float]:
    """A process's resident set now and at its peak (VmRSS, VmHWM), with its children's."""
    now = peak = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            kb = int(line.split()[1]) / 1024
            now, peak = (kb, peak) if line.startswith("VmRSS") else (now, kb)
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        child_now, child_peak = memory_mb(int(child))
        now, peak = now + child_now, peak + child_peak
    return now, peak


def memory_table(processes: dict[str, subprocess.Popen], redis_url: str) -> list[str]:
    rows = [f"| {name} | {now:.0f} MB | {peak:.0f} MB |"
            for name, process in processes.items()
            for now, peak in [memory_mb(process.pid)]]
    info = Redis.from_url(redis_url).info("memory")
    rows.append(f"| Redis (the whole server) | {info['used_memory_rss'] / 2**20:.0f} MB | "
                f"{info['used_memory_peak'] / 2**20:.0f} MB (data) |")
    return ["| process | RSS after the batch | peak |", "|--|--:|--:|", *rows]


def stop_all(processes: list[subprocess.Popen], timeout: float) -> None:
    """SIGTERM to all, then wait for each: they stop side by side, not one by one."""
    for process in processes:
        process.terminate()
    for process in processes:
        process.wait(timeout)


def wait_healthy(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    sys.exit(f"the site at {url} did not come up")


def latency_run(url: str, images: list[bytes], count: int) -> list[float]:
    session = requests.Session()
    seconds = []
    for i in range(count):
        started = time.perf_counter()
        created = session.post(f"{url}/api/predictions",
                               files={"image": (f"{i}.jpg", images[i % len(images)])}).json()
        body = session.get(f"{url}{created['url']}?wait=10").json()
        seconds.append(time.perf_counter() - started)
        if body["status"] != "done":
            sys.exit(f"prediction not done: {body}")
    return seconds


def batch_run(url: str, images: list[bytes]) -> tuple[float, float]:
    """Images per second for one batch, and the seconds the upload request took."""
    files = [("images", (f"{i}.jpg", data)) for i, data in enumerate(images)]
    started = time.perf_counter()
    created = requests.post(f"{url}/api/batches", files=files, timeout=600)
    uploaded = time.perf_counter() - started
    batch = created.json()
    if created.status_code != 202:
        sys.exit(f"batch refused: {batch}")
    while not (state := requests.get(f"{url}{batch['url']}").json())["complete"]:
        time.sleep(0.05)
    elapsed = time.perf_counter() - started
    if state["counts"]["done"] != len(images):
        sys.exit(f"batch ended with {state['counts']}")
    return len(images) / elapsed, uploaded


def serving_alone(serving_url: str, images: list[bytes], clients: int, chunk: int) -> float:
    """The same images straight to Serving by `clients` threads, `chunk` per call."""
    parts = [images[i::clients] for i in range(clients)]

    def send(part: list[bytes]) -> None:
        with ServingClient(serving_url, "classifier", batch_size=chunk) as client:
            client.classify(part)

    threads = [threading.Thread(target=send, args=(p,)) for p in parts]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(images) / (time.perf_counter() - started)


def main() -> None:
    settings = get_settings()
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--model-dir", type=Path,
                     default=settings.model_base_path / settings.model_name)
    cli.add_argument("--data", type=Path, default=settings.fruits_dir)
    cli.add_argument("--workers", type=int, default=2)
    cli.add_argument("--fork", action="store_true",
                     help="workers fork a process per job (python -m worker --fork)")
    cli.add_argument("--images", type=int, default=500)
    cli.add_argument("--latency-count", type=int, default=50)
    cli.add_argument("--database-url", help="default: a fresh SQLite file")
    cli.add_argument("--redis-url", default="redis://127.0.0.1:6379/11",
                     help="flushed first: give it a database of its own")
    args = cli.parse_args()
    images = photos(args.data)
    batch = [images[i % len(images)] for i in range(args.images)]
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        serving, serving_url = embedded(args.model_dir, tmp_path / "serving.log")
        Redis.from_url(args.redis_url).flushdb()
        port = free_port()
        env = os.environ | {
            "DATABASE_URL": args.database_url or f"sqlite:///{tmp_path / 'bench.db'}",
            "REDIS_URL": args.redis_url, "UPLOAD_DIR": str(tmp_path / "uploads"),
            "SERVING_URL": serving_url, "MODEL_NAME": "classifier",
            "WEB_BIND": f"127.0.0.1:{port}"}
        subprocess.run([BIN / "flask", "--app", "frontend", "db", "upgrade"], env=env,
                       cwd=ROOT, check=True, capture_output=True)
        log = (tmp_path / "processes.log").open("w")
        processes = [subprocess.Popen([BIN / "gunicorn", "frontend:create_app()"], env=env,
                                      cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)]
        worker = [sys.executable, "-m", "worker"] + (["--fork"] if args.fork else [])
        processes += [subprocess.Popen(worker, env=env, cwd=ROOT,
                                       stdout=log, stderr=subprocess.STDOUT)
                      for _ in range(args.workers)]
        url = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(url)
            print(f"{len(images)} fruit JPEGs, {args.workers} RQ workers "
                  f"({'a fork per job' if args.fork else 'jobs in-process'}), "
                  f"chunks of {settings.chunk_size}, {os.cpu_count()} CPUs, "
                  f"database {env['DATABASE_URL'].split(':')[0]}")
            latency_run(url, images, 5)  # warm-up
            seconds = latency_run(url, images, args.latency_count)
            alone_before = serving_alone(serving_url, batch, args.workers, settings.chunk_size)
            rate, uploaded = batch_run(url, batch)
            alone_after = serving_alone(serving_url, batch, args.workers, settings.chunk_size)
            named = {f"site: gunicorn, master and {os.environ.get('WEB_WORKERS', 2)} workers":
                     processes[0], "Serving (embedded, TensorFlow)": serving}
            named |= {f"RQ worker {i + 1}": p for i, p in enumerate(processes[1:])}
            memory = memory_table(named, args.redis_url)
        finally:
            stop_all([*processes, serving], timeout=30)
    alone = (alone_before + alone_after) / 2
    p50, p99 = statistics.median(seconds) * 1000, float(np.percentile(seconds, 99)) * 1000
    print()
    print("| measure | figure |")
    print("|--|--:|")
    print(f"| one image, upload to result, p50 ({args.latency_count} in a row) | {p50:.0f} ms |")
    print(f"| one image, upload to result, p99 | {p99:.0f} ms |")
    print(f"| batch of {args.images} through the queue | {rate:.1f} img/s |")
    print(f"| (of which the upload request) | {uploaded:.1f} s |")
    print(f"| Serving alone, same images, {args.workers} clients (before / after) | "
          f"{alone_before:.1f} / {alone_after:.1f} img/s |")
    print(f"| batch rate / Serving alone | {rate / alone:.0%} |")
    print()
    print("\n".join(memory))
    print()
    print(f"p50 {p50:.0f} ms (target under 150 ms); batch at {rate / alone:.0%} of Serving "
          "alone (target at least 70%)")


if __name__ == "__main__":
    main()
