"""The improvement loop end to end, through the running system: does reviewing
photos from another source make the served model better on that source, and
how long does an administrator wait for it?

Started here, each a real process: the embedded Serving polling a fresh model
folder, the site under gunicorn, 2 RQ workers and `python -m trainer worker`.

1. A first version is trained on the fruit photos (`python -m trainer train`),
   which also fills the feature cache with the base photos' features.
2. Every webstock photo is uploaded through the API (one batch); the version's
   answers are the "before" figures.
3. For k = 2, 5, 10: k photos per class more are reviewed through the admin
   API (true labels from the folders), a training run is started, and the
   bench waits until the run ends and, if promoted, until the new version
   answers an upload. Then the photos never reviewed (the same ones for every
   k: those outside the k = 10 pool) are uploaded again and scored.
4. The k = 10 run once more with an empty feature cache (a trainer worker
   started on a fresh FEATURE_CACHE_DIR): the cold run to compare with.

Prints figures, asserts nothing.

    .venv/bin/python bench/feedback_loop.py [--data DIR] [--shift-data DIR] [--ks 2 5 10]
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from redis import Redis
from serving_speed import embedded
from web_speed import BIN, free_port, wait_healthy

from core.settings import ROOT, get_settings

ADMIN = "bench"


def photos_by_class(folder: Path) -> dict[str, list[Path]]:
    return {d.name: sorted(p for p in d.iterdir() if p.is_file())
            for d in sorted(folder.iterdir()) if d.is_dir() and not d.name.startswith(".")}


def upload(url: str, paths: list[Path]) -> dict[Path, dict]:
    """One batch through the public API; each photo's finished prediction."""
    files = [("images", (f"{i}{p.suffix}", p.read_bytes())) for i, p in enumerate(paths)]
    created = requests.post(f"{url}/api/batches", files=files, timeout=600)
    created.raise_for_status()
    batch = created.json()
    while not requests.get(f"{url}{batch['url']}", timeout=30).json()["complete"]:
        time.sleep(0.2)
    rows = requests.get(f"{url}/api/batches/{batch['id']}/predictions", timeout=60).json()
    by_name = {row["filename"]: row for row in rows["predictions"]}
    return {p: by_name[f"{i}{p.suffix}"] for i, p in enumerate(paths)}


def accuracy(answers: dict[Path, dict]) -> float:
    return sum(row["label"] == path.parent.name for path, row in answers.items()) / len(answers)


def run_until_served(url: str, admin: requests.Session, probe: Path) -> dict:
    """Start a training run; wait for its end and, if promoted, for the new
    version to answer an upload. Returns the run with the seconds it took."""
    started = time.perf_counter()
    created = admin.post(f"{url}/admin/api/training-runs", timeout=30)
    if created.status_code != 202:
        sys.exit(f"the run was refused: {created.status_code} {created.text}")
    run_url = f"{url}/admin/api/training-runs/{created.json()['id']}"
    while (run := admin.get(run_url, timeout=30).json())["status"] in ("queued", "running"):
        time.sleep(0.5)
    run["run_seconds"] = time.perf_counter() - started
    if run["status"] == "promoted":
        while upload(url, [probe])[probe]["model_version"] != run["version"]:
            time.sleep(0.2)
    run["served_seconds"] = time.perf_counter() - started
    return run


def review(url: str, admin: requests.Session, answers: dict[Path, dict],
           paths: list[Path]) -> None:
    for path in paths:
        response = admin.post(f"{url}/admin/api/predictions/{answers[path]['id']}/review",
                              json={"label": path.parent.name}, timeout=30)
        response.raise_for_status()


def start(argv: list, env: dict, log) -> subprocess.Popen:
    return subprocess.Popen(argv, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)


def main() -> None:
    settings = get_settings()
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--data", type=Path, default=settings.fruits_dir)
    cli.add_argument("--shift-data", type=Path, default=settings.webstock_dir)
    cli.add_argument("--ks", type=int, nargs="+", default=[2, 5, 10])
    cli.add_argument("--redis-url", default="redis://127.0.0.1:6379/13",
                     help="flushed first: give it a database of its own")
    cli.add_argument("--seed", type=int, default=0)
    args = cli.parse_args()
    shift = photos_by_class(args.shift_data)
    rng = random.Random(args.seed)
    pools = {name: rng.sample(paths, len(paths)) for name, paths in shift.items()}
    reviewable = {name: pool[:max(args.ks)] for name, pool in pools.items()}
    held_out = [p for pool in pools.values() for p in pool[max(args.ks):]]

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        models = tmp_path / "models"
        port = free_port()
        env = os.environ | {
            "DATABASE_URL": f"sqlite:///{tmp_path / 'bench.db'}", "REDIS_URL": args.redis_url,
            "UPLOAD_DIR": str(tmp_path / "uploads"), "MODEL_NAME": "classifier",
            "MODEL_BASE_PATH": str(models), "DATASET_DIR": str(args.data),
            "FEATURE_CACHE_DIR": str(tmp_path / "features"), "WEB_BIND": f"127.0.0.1:{port}",
            "ADMIN_PASSWORD": "bench-password-not-secret", "TF_CPP_MIN_LOG_LEVEL": "2"}
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "trainer", "train", "--data", str(args.data),
                        "--out", str(models), "--name", "classifier"], env=env, cwd=ROOT,
                       check=True, capture_output=True)
        first_train = time.perf_counter() - started
        serving, serving_url = embedded(models / "classifier", tmp_path / "serving.log")
        env["SERVING_URL"] = serving_url
        Redis.from_url(args.redis_url).flushdb()
        flask = [BIN / "flask", "--app", "frontend"]
        subprocess.run([*flask, "db", "upgrade"], env=env, cwd=ROOT, check=True,
                       capture_output=True)
        subprocess.run([*flask, "create-admin", ADMIN], env=env, cwd=ROOT, check=True,
                       capture_output=True)
        token = subprocess.run([*flask, "create-token", ADMIN], env=env, cwd=ROOT, check=True,
                               capture_output=True, text=True).stdout.strip().splitlines()[-1]
        log = (tmp_path / "processes.log").open("w")
        site = [start([BIN / "gunicorn", "frontend:create_app()"], env, log)]
        workers = [start([sys.executable, "-m", "worker"], env, log) for _ in range(2)]
        trainer = start([sys.executable, "-m", "trainer", "worker"], env, log)
        url = f"http://127.0.0.1:{port}"
        admin = requests.Session()
        admin.headers["Authorization"] = f"Bearer {token}"
        rows = []
        try:
            wait_healthy(url)
            everything = [p for paths in shift.values() for p in paths]
            answers = upload(url, everything)
            before = accuracy({p: answers[p] for p in held_out})
            reviewed = 0
            for k in args.ks:
                batch = [p for pool in reviewable.values() for p in pool[reviewed:k]]
                review(url, admin, answers, batch)
                reviewed = k
                run = run_until_served(url, admin, held_out[0])
                after = accuracy(upload(url, held_out))
                rows.append((f"{k} per class ({k * len(shift)} reviewed)", before, after, run))
            trainer.terminate()
            trainer.wait(120)
            cold_env = env | {"FEATURE_CACHE_DIR": str(tmp_path / "features-cold")}
            trainer = start([sys.executable, "-m", "trainer", "worker"], cold_env, log)
            cold = run_until_served(url, admin, held_out[0])
        finally:
            for process in [*site, *workers, trainer]:
                process.terminate()
            for process in [*site, *workers, trainer]:
                process.wait(120)
            serving.terminate()
            serving.wait()

    print(f"\nfirst version: trained on {args.data.name} in {first_train:.0f} s; "
          f"{len(held_out)} {args.shift_data.name} photos never reviewed are scored; "
          f"{os.cpu_count()} CPUs")
    print()
    print("| reviewed | accuracy before | after | gate | start run to new version answering |")
    print("|--|--:|--:|--|--:|")
    for name, was, now, run in rows:
        print(f"| {name} | {was:.1%} | {now:.1%} | {run['status']} (v{run['version']}) | "
              f"{run['served_seconds']:.1f} s |")
    warm = rows[-1][3]["served_seconds"]
    print(f"\nthe last run again with an empty feature cache: {cold['served_seconds']:.1f} s "
          f"({cold['status']}); warm cache {warm:.1f} s, {cold['served_seconds'] / warm:.1f}x "
          "faster (targets: under 60 s, at least 5x)")
    for name, *_, run in rows:
        print(f"  {name}: {run['message']}")


if __name__ == "__main__":
    main()
