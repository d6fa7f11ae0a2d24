"""Images per second over REST, side by side: the embedded server with each backend,
the naive Flask + Keras peer, and the same SavedModel called raw in-process.

The newest version of the model (make train) is served with
serving/batching.config. Clients send one base64 JPEG from the fruit photos per
request, at 1 and 16 concurrent clients, as the web workers do. In the same run:
the raw rate (the SavedModel's signature called in this process at batches of
1, 8 and 32, decoding included; the best of them, before and after the REST
runs), and the runtimes that could run the version's pixels.tflite, timed on
the same decoded pixels. Targets: the LiteRT backend at 16 clients at least 2x
the raw best and 6x the naive peer; p50 at one client under 25 ms.
Prints figures, asserts nothing.

    .venv/bin/python bench/serving_speed.py [--model-dir models/classifier] [--seconds 20]

OpenVINO is timed when it is installed (pip install -e '.[bench]').
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import requests  # noqa: E402

from core.contract import ACCELERATED_FILE, INPUT, SCORES, SIGNATURE  # noqa: E402
from core.settings import ROOT, get_settings  # noqa: E402
from trainer.export import versions  # noqa: E402

LISTENING = re.compile(r"Serving the REST API at http://127\.0\.0\.1:(\d+)")
CLIENTS = (1, 16)


def photos(folder: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted(folder.glob("*/*")) if p.suffix.lower() in
            (".jpg", ".jpeg")]


def raw_rate(version_dir: Path, images: list[bytes], size: int, count: int = 320) -> float:
    """Images per second through the signature in this process, `size` per call."""
    import tensorflow as tf

    serve = tf.saved_model.load(str(version_dir)).signatures[SIGNATURE]

    def batch(i: int) -> tf.Tensor:
        return tf.constant([images[(i * size + j) % len(images)] for j in range(size)])

    serve(**{INPUT: batch(0)})  # warm-up
    calls = max(count // size, 1)
    started = time.perf_counter()
    for i in range(calls):
        serve(**{INPUT: batch(i + 1)})[SCORES].numpy()
    return calls * size / (time.perf_counter() - started)


def runtimes(path: Path, pixels: np.ndarray) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """Each candidate runtime as a function of one [1, 224, 224, 3] image."""
    from ai_edge_litert.interpreter import Interpreter

    found = {}
    for threads in (1, 2):
        interpreter = Interpreter(model_path=str(path), num_threads=threads)
        interpreter.allocate_tensors()
        found[f"LiteRT float32, {threads} thread(s)"] = _litert(interpreter)
    try:
        import openvino
    except ImportError:
        return found
    core = openvino.Core()
    for precision in ("f32", "bf16"):
        compiled = core.compile_model(core.read_model(str(path)), "CPU", {
            "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": precision})
        found[f"OpenVINO {precision}, latency hint"] = _openvino(compiled)
    return found


def _litert(interpreter) -> Callable[[np.ndarray], np.ndarray]:
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()

    def run(image: np.ndarray) -> np.ndarray:
        interpreter.set_tensor(inp["index"], image)
        interpreter.invoke()
        return interpreter.get_tensor(out["index"])[0].copy()
    return run


def _openvino(compiled) -> Callable[[np.ndarray], np.ndarray]:
    request = compiled.create_infer_request()
    return lambda image: request.infer({0: image})[compiled.output(0)][0].copy()


def compare_runtimes(version_dir: Path, images: list[bytes]) -> None:
    import tensorflow as tf

    from trainer.images import decode_batch

    pixels = decode_batch(tf.constant(images[:96])).numpy()
    expected = tf.saved_model.load(str(version_dir)).signatures[SIGNATURE](
        **{INPUT: tf.constant(images[:96])})[SCORES].numpy()
    print("\n| runtime (pixels in, batch 1) | img/s | max score difference | same top class |")
    print("|---|--:|--:|--:|")
    for name, run in runtimes(version_dir / ACCELERATED_FILE, pixels).items():
        scores = np.stack([run(image[np.newaxis]) for image in pixels])
        started = time.perf_counter()
        for image in pixels:
            run(image[np.newaxis])
        rate = len(pixels) / (time.perf_counter() - started)
        same = np.mean(scores.argmax(1) == expected.argmax(1))
        print(f"| {name} | {rate:.0f} | {np.abs(scores - expected).max():.2g} | {same:.0%} |")


def wait_listening(process: subprocess.Popen, log_path: Path, pattern: re.Pattern) -> str:
    while not (match := pattern.search(log_path.read_text(errors="replace"))):
        if process.poll() is not None:
            sys.exit(f"server failed:\n{log_path.read_text()}")
        time.sleep(0.2)
    return f"http://127.0.0.1:{match.group(1)}"


def embedded(model_dir: Path, log_path: Path, *flags: str) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "serving", "--rest_api_host=127.0.0.1", "--rest_api_port=0",
         "--model_name=classifier", f"--model_base_path={model_dir}", "--enable_batching",
         f"--batching_parameters_file={ROOT / 'serving' / 'batching.config'}", *flags],
        stdout=log_path.open("w"), stderr=subprocess.STDOUT, cwd=ROOT)
    url = wait_listening(process, log_path, LISTENING)
    while "now serving it" not in log_path.read_text():
        time.sleep(0.2)
    return process, url


def naive(version_dir: Path, log_path: Path) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("gunicorn")), "-w", "2", "-b", "127.0.0.1:0",
         "--chdir", str(ROOT / "bench"), "--timeout", "120", "naive_server:app"],
        stdout=log_path.open("w"), stderr=subprocess.STDOUT, cwd=ROOT,
        env={**os.environ, "MODEL_DIR": str(version_dir)})
    return process, wait_listening(process, log_path, re.compile(
        r"Listening at: http://127\.0\.0\.1:(\d+)"))


def rest_run(url: str, images: list[bytes], clients: int, seconds: float
             ) -> tuple[float, list[float]]:
    """(images per second, per-request latencies) over `seconds` of steady load."""
    bodies = [{"instances": [{"b64": base64.b64encode(i).decode()}]} for i in images]
    latencies: list[float] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def client_loop(offset: int) -> None:
        session = requests.Session()
        i = offset
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            session.post(f"{url}/v1/models/classifier:predict", json=bodies[i % len(bodies)],
                         timeout=120).raise_for_status()
            with lock:
                latencies.append(time.perf_counter() - started)
            i += clients

    threads = [threading.Thread(target=client_loop, args=(k,)) for k in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(latencies) / (time.perf_counter() - started), latencies


def measure(start, images: list[bytes], seconds: float) -> dict[int, tuple[float, list[float]]]:
    with tempfile.TemporaryDirectory() as tmp:
        process, url = start(Path(tmp) / "server.log")
        try:
            rest_run(url, images, 4, 3)  # warm the connections, the workers and the model
            return {c: rest_run(url, images, c, seconds) for c in CLIENTS}
        finally:
            process.terminate()
            process.wait()


def main() -> None:
    settings = get_settings()
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--model-dir", type=Path,
                     default=settings.model_base_path / settings.model_name)
    cli.add_argument("--data", type=Path, default=settings.fruits_dir)
    cli.add_argument("--seconds", type=float, default=20, help="per server and client count")
    args = cli.parse_args()
    found = versions(args.model_dir)
    if not found:
        sys.exit(f"no model versions in {args.model_dir}: run `make train` first")
    version_dir = args.model_dir / str(found[-1])
    if not (version_dir / ACCELERATED_FILE).is_file():
        sys.exit(f"{version_dir} has no {ACCELERATED_FILE}: train it again")
    images = photos(args.data)
    print(f"model {version_dir}, {len(images)} JPEGs "
          f"(mean {np.mean([len(i) for i in images]) / 1024:.1f} KiB), {os.cpu_count()} CPUs")

    raw = {size: raw_rate(version_dir, images, size) for size in (1, 8, 32)}
    best = max(raw, key=raw.get)
    print("raw in-process: " + ", ".join(f"batch {s}: {r:.1f} img/s" for s, r in raw.items()))
    compare_runtimes(version_dir, images)
    servers = {
        "embedded, SavedModel backend": lambda log: embedded(
            args.model_dir, log, "--accelerated_backend=none"),
        "embedded, LiteRT backend": lambda log: embedded(args.model_dir, log),
        "embedded, LiteRT backend, 1 thread": lambda log: embedded(
            args.model_dir, log, "--accelerated_threads=1"),
        "naive Flask + Keras, gunicorn -w 2": lambda log: naive(version_dir, log),
    }
    results = {name: measure(start, images, args.seconds) for name, start in servers.items()}
    after = raw_rate(version_dir, images, best)
    rate = (raw[best] + after) / 2
    print(f"\nraw best (batch {best}): {raw[best]:.1f} img/s before, {after:.1f} after; "
          f"mean {rate:.1f}\n")
    print("| server | clients | img/s | x raw | p50 ms | p99 ms |")
    print("|---|--:|--:|--:|--:|--:|")
    for name, by_clients in results.items():
        for clients, (served, latencies) in by_clients.items():
            p50 = statistics.median(latencies) * 1000
            p99 = float(np.percentile(latencies, 99)) * 1000
            print(f"| {name} | {clients} | {served:.1f} | {served / rate:.2f} | {p50:.0f} "
                  f"| {p99:.0f} |")
    fast = results["embedded, LiteRT backend"]
    peer = results["naive Flask + Keras, gunicorn -w 2"]
    print(f"\nLiteRT backend, 16 clients: {fast[16][0] / rate:.2f}x raw TF's best batch "
          f"(target 2x), {fast[16][0] / peer[16][0]:.1f}x the naive peer (target 6x); "
          f"p50 at 1 client {statistics.median(fast[1][1]) * 1000:.1f} ms (target < 25 ms)")


if __name__ == "__main__":
    main()
