"""Images per second through the REST API against the same SavedModel called raw.

The newest version of the model (make train) is served by the embedded server
with serving/batching.config. Clients send one base64 JPEG from the fruit
photos per request, at concurrency 1, 4 and 16, as the web workers do. In the
same run, the raw rate: the SavedModel's signature called in this process
with batches of 32 of the same JPEG bytes (decoding included in both), before
and after the REST runs. Target: at concurrency 16, at least 80% of raw.
Prints figures, asserts nothing.

    .venv/bin/python bench/serving_speed.py [--model-dir models/classifier] [--seconds 20]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from core.contract import INPUT, SCORES, SIGNATURE  # noqa: E402
from core.serving_client import ServingClient  # noqa: E402
from core.settings import ROOT, get_settings  # noqa: E402
from trainer.export import versions  # noqa: E402

LISTENING = re.compile(r"Serving the REST API at http://127\.0\.0\.1:(\d+)")


def photos(folder: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted(folder.glob("*/*")) if p.suffix.lower() in
            (".jpg", ".jpeg")]


def raw_rate(version_dir: Path, images: list[bytes], size: int = 32, count: int = 320) -> float:
    """Images per second through the signature in this process, `size` per call."""
    import tensorflow as tf

    serve = tf.saved_model.load(str(version_dir)).signatures[SIGNATURE]

    def batch(i: int) -> tf.Tensor:
        return tf.constant([images[(i * size + j) % len(images)] for j in range(size)])

    serve(**{INPUT: batch(0)})  # warm-up
    calls = count // size
    started = time.perf_counter()
    for i in range(calls):
        serve(**{INPUT: batch(i + 1)})[SCORES].numpy()
    return calls * size / (time.perf_counter() - started)


def start_server(model_dir: Path, log_path: Path) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "serving", "--rest_api_host=127.0.0.1", "--rest_api_port=0",
         "--model_name=classifier", f"--model_base_path={model_dir}", "--enable_batching",
         f"--batching_parameters_file={ROOT / 'serving' / 'batching.config'}"],
        stdout=log_path.open("w"), stderr=subprocess.STDOUT, cwd=ROOT)
    while not (match := LISTENING.search(log_path.read_text())):
        if process.poll() is not None:
            sys.exit(f"server failed:\n{log_path.read_text()}")
        time.sleep(0.2)
    url = f"http://127.0.0.1:{match.group(1)}"
    client = ServingClient(url, "classifier")
    while not any(s["state"] == "AVAILABLE" for s in _status(client)):
        time.sleep(0.2)
    return process, url


def _status(client: ServingClient) -> list[dict]:
    try:
        return client.status()
    except Exception:
        return []


def rest_run(url: str, images: list[bytes], concurrency: int, seconds: float
             ) -> tuple[float, list[float]]:
    """(images per second, per-request latencies) over `seconds` of steady load."""
    latencies: list[float] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def client_loop(offset: int) -> None:
        client = ServingClient(url, "classifier", retries=0)
        i = offset
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            client.classify([images[i % len(images)]])
            with lock:
                latencies.append(time.perf_counter() - started)
            i += concurrency

    threads = [threading.Thread(target=client_loop, args=(k,)) for k in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(latencies) / (time.perf_counter() - started), latencies


def main() -> None:
    settings = get_settings()
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--model-dir", type=Path,
                     default=settings.model_base_path / settings.model_name)
    cli.add_argument("--data", type=Path, default=settings.fruits_dir)
    cli.add_argument("--seconds", type=float, default=20, help="per concurrency level")
    args = cli.parse_args()
    found = versions(args.model_dir)
    if not found:
        sys.exit(f"no model versions in {args.model_dir}: run `make train` first")
    version_dir = args.model_dir / str(found[-1])
    images = photos(args.data)
    print(f"model {version_dir}, {len(images)} JPEGs "
          f"(mean {np.mean([len(i) for i in images]) / 1024:.1f} KiB), {os.cpu_count()} CPUs")

    raw_before = raw_rate(version_dir, images)
    print(f"raw in-process, batch 32: {raw_before:.1f} img/s")
    for size in (16, 8, 1):  # context: which batch sizes this CPU runs best
        print(f"raw in-process, batch {size}: {raw_rate(version_dir, images, size):.1f} img/s")
    with tempfile.TemporaryDirectory() as tmp:
        process, url = start_server(args.model_dir, Path(tmp) / "server.log")
        try:
            rest_run(url, images, 4, 3)  # warm the connections and the server
            results = {c: rest_run(url, images, c, args.seconds) for c in (1, 4, 16)}
        finally:
            process.terminate()
            process.wait()
    raw_after = raw_rate(version_dir, images)
    raw = (raw_before + raw_after) / 2
    print(f"raw in-process, batch 32 (after): {raw_after:.1f} img/s; mean {raw:.1f} img/s")
    print()
    print("| clients | REST img/s | of raw | p50 ms | p99 ms |")
    print("|--:|--:|--:|--:|--:|")
    for concurrency, (rate, latencies) in results.items():
        p50 = statistics.median(latencies) * 1000
        p99 = float(np.percentile(latencies, 99)) * 1000
        print(f"| {concurrency} | {rate:.1f} | {rate / raw:.0%} | {p50:.0f} | {p99:.0f} |")
    print()
    print(f"concurrency 16 reaches {results[16][0] / raw:.0%} of the raw batch-32 rate "
          "(target: at least 80%)")


if __name__ == "__main__":
    main()
