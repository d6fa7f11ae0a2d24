"""Safe roll-outs through the running system: does the canary get the share it
was set, what does routing cost, and how fast is a worse version rolled back?

Started here, each a real process: the embedded Serving with every version
loaded (`all`), the site under gunicorn and 2 RQ workers (which run the
canary's guard every second).

1. Version 1 is trained on the fruit photos; version 2 on the same photos with
   one class's labels shuffled among all classes: a deliberately worse model.
2. Share: with version 2 the canary at 20%, 1,000 predictions (one batch
   after another) are counted by the role that answered, against a binomial
   test of the set share.
3. Routing cost: upload-to-result p50 of single uploads in mode newest and
   pinned with a 50% canary, alternated in rounds.
4. Rollback drill: version 2 the canary at 25% again; photos from elsewhere
   are uploaded in small batches, each reviewed with its true class through
   the admin API as it finishes, until the guard rolls the canary back: how
   many predictions it answered, and how many of its records were reviewed.

Prints figures, asserts nothing.

    .venv/bin/python bench/rollout.py [--data DIR] [--drill-data DIR] [--worse-class banana]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from feedback_loop import ADMIN, photos_by_class, start, upload
from redis import Redis
from scipy import stats
from serving_speed import LISTENING
from web_speed import BIN, free_port, latency_run, stop_all, wait_healthy

from core.db import Database, Prediction
from core.rollout import store
from core.settings import ROOT, get_settings


def shuffled_copy(data: Path, out: Path, worse: str, seed: int) -> Path:
    """`data` as symlinks, the photos of class `worse` spread at random over every class."""
    classes = photos_by_class(data)
    rng = random.Random(seed)
    for name in classes:
        (out / name).mkdir(parents=True)
    for name, paths in classes.items():
        for path in paths:
            target = rng.choice(list(classes)) if name == worse else name
            (out / target / f"{name}-{path.name}").symlink_to(path.resolve())
    return out


def serve_all(model_dir: Path, log: Path) -> tuple[subprocess.Popen, str]:
    config = model_dir.parent / "models.config"
    config.write_text(f'model_config_list {{ config {{ name: "classifier" base_path: '
                      f'"{model_dir}" model_platform: "tensorflow" '
                      f'model_version_policy {{ all {{ }} }} }} }}')
    process = subprocess.Popen(
        [sys.executable, "-m", "serving", "--rest_api_host=127.0.0.1", "--rest_api_port=0",
         f"--model_config_file={config}", "--enable_batching",
         f"--batching_parameters_file={ROOT / 'serving' / 'batching.config'}"],
        stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=ROOT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if (found := LISTENING.search(log.read_text())) and log.read_text().count(
                "now serving it") >= 2:
            return process, f"http://127.0.0.1:{found.group(1)}"
        time.sleep(0.3)
    sys.exit(f"Serving did not load both versions:\n{log.read_text()[-2000:]}")


def put(admin: requests.Session, url: str, **state) -> None:
    body = {"mode": "pinned", "stable": 1, "canary": None, "canary_share": 0,
            "shadow": None} | state
    response = admin.put(f"{url}/admin/api/rollout", json=body, timeout=30)
    if response.status_code != 200:
        sys.exit(f"the roll-out change was refused: {response.status_code} {response.text}")


def share_run(url: str, photos: list[Path], count: int, chunk: int = 200) -> list[dict]:
    rows: list[dict] = []
    while len(rows) < count:
        size = min(chunk, count - len(rows))
        batch = [photos[(len(rows) + i) % len(photos)] for i in range(size)]
        rows += list(upload(url, batch).values())  # a path twice counts once
    return rows


def routing_cost(url: str, admin: requests.Session, images: list[bytes], rounds: int,
                 per_round: int) -> dict[str, list[float]]:
    seconds: dict[str, list[float]] = {"newest": [], "canary 50%": []}
    for _ in range(rounds):
        admin.put(f"{url}/admin/api/rollout", json={"mode": "newest"}, timeout=30)
        seconds["newest"] += latency_run(url, images, per_round)
        put(admin, url, canary=2, canary_share=0.5)
        seconds["canary 50%"] += latency_run(url, images, per_round)
    return seconds


def drill(url: str, admin: requests.Session, photos: list[Path], chunk: int) -> dict:
    put(admin, url, canary=2, canary_share=0.25)
    sent = reviewed = 0
    started = time.perf_counter()
    for start_at in range(0, len(photos), chunk):
        answers = upload(url, photos[start_at:start_at + chunk])
        sent += len(answers)
        for path, row in answers.items():
            response = admin.post(f"{url}/admin/api/predictions/{row['id']}/review",
                                  json={"label": path.parent.name}, timeout=30)
            response.raise_for_status()
            reviewed += 1
        deadline = time.monotonic() + 3  # the guard checks every second
        while time.monotonic() < deadline:
            if admin.get(f"{url}/admin/api/rollout", timeout=30).json()["canary"] is None:
                return {"sent": sent, "reviewed": reviewed,
                        "seconds": time.perf_counter() - started}
            time.sleep(0.25)
    return {"sent": sent, "reviewed": reviewed, "seconds": None}


def main() -> None:
    settings = get_settings()
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--data", type=Path, default=settings.fruits_dir)
    cli.add_argument("--drill-data", type=Path, default=settings.webstock_dir)
    cli.add_argument("--worse-class", default="banana")
    cli.add_argument("--share", type=float, default=0.2)
    cli.add_argument("--count", type=int, default=1000)
    cli.add_argument("--redis-url", default="redis://127.0.0.1:6379/12",
                     help="flushed first: give it a database of its own")
    cli.add_argument("--seed", type=int, default=0)
    args = cli.parse_args()
    fruit = [p for paths in photos_by_class(args.data).values() for p in paths]
    elsewhere = [p for paths in photos_by_class(args.drill_data).values() for p in paths]
    random.Random(args.seed).shuffle(elsewhere)

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        models = tmp_path / "models"
        port = free_port()
        database_url = f"sqlite:///{tmp_path / 'bench.db'}"
        env = os.environ | {
            "DATABASE_URL": database_url, "REDIS_URL": args.redis_url,
            "UPLOAD_DIR": str(tmp_path / "uploads"), "MODEL_NAME": "classifier",
            "MODEL_BASE_PATH": str(models), "WEB_BIND": f"127.0.0.1:{port}",
            "ADMIN_PASSWORD": "bench-password-not-secret", "TF_CPP_MIN_LOG_LEVEL": "2",
            "ROLLOUT_CHECK_INTERVAL": "1", "ANON_IMAGES_PER_MINUTE": "100000",
            "ANON_IMAGES_PER_HOUR": "1000000", "UPLOAD_REQUESTS_PER_MINUTE": "100000"}
        worse_data = shuffled_copy(args.data, tmp_path / "shuffled", args.worse_class, args.seed)
        for data in (args.data, worse_data):
            subprocess.run([sys.executable, "-m", "trainer", "train", "--data", str(data),
                            "--out", str(models), "--name", "classifier",
                            "--feature-cache", str(tmp_path / "features")],
                           env=env, cwd=ROOT, check=True, capture_output=True)
        serving, env["SERVING_URL"] = serve_all(models / "classifier", tmp_path / "serving.log")
        Redis.from_url(args.redis_url).flushdb()
        flask = [BIN / "flask", "--app", "frontend"]
        for command in (["db", "upgrade"], ["create-admin", ADMIN]):
            subprocess.run([*flask, *command], env=env, cwd=ROOT, check=True,
                           capture_output=True)
        token = subprocess.run([*flask, "create-token", ADMIN], env=env, cwd=ROOT, check=True,
                               capture_output=True, text=True).stdout.strip().splitlines()[-1]
        log = (tmp_path / "processes.log").open("w")
        processes = [start([BIN / "gunicorn", "frontend:create_app()"], env, log),
                     *(start([sys.executable, "-m", "worker"], env, log) for _ in range(2))]
        url = f"http://127.0.0.1:{port}"
        admin = requests.Session()
        admin.headers["Authorization"] = f"Bearer {token}"
        try:
            wait_healthy(url)
            put(admin, url, canary=2, canary_share=args.share)
            rows = share_run(url, fruit, args.count)
            canary = sum(r["model_role"] == "canary" for r in rows)
            test = stats.binomtest(canary, len(rows), args.share)
            cost = routing_cost(url, admin, [p.read_bytes() for p in elsewhere[:20]], 3, 20)
            result = drill(url, admin, elsewhere, chunk=10)
            db = Database(database_url)
            with db.session() as session:
                events = store.events(session, kind="rollback")
                answered = session.query(Prediction).filter(
                    Prediction.model_role == "canary",
                    Prediction.created_at >= (events[0].created_at if events else
                                              store.load(session).canary_since)).count()
                event = store.event_json(events[0]) if events else None
            db.dispose()
        finally:
            stop_all([*processes, serving], timeout=120)

    print(f"\n{os.cpu_count()} CPUs; version 2: {args.data.name} with {args.worse_class}'s "
          f"labels shuffled over every class")
    print(f"\ncanary share: {canary} of {len(rows)} predictions = {canary / len(rows):.1%} "
          f"(set {args.share:.0%}; binomial test p = {test.pvalue:.2f}, 95% interval "
          f"{test.proportion_ci().low:.1%} to {test.proportion_ci().high:.1%})")
    print("\n| mode | uploads | upload-to-result p50 | p90 |\n|--|--:|--:|--:|")
    for mode, seconds in cost.items():
        deciles = statistics.quantiles(seconds, n=10)
        print(f"| {mode} | {len(seconds)} | {statistics.median(seconds) * 1000:.0f} ms | "
              f"{deciles[8] * 1000:.0f} ms |")
    ratio = statistics.median(cost["canary 50%"]) / statistics.median(cost["newest"])
    print(f"routing with a canary / without: {ratio:.2f}x p50")
    if event is None:
        print(f"\nrollback drill: NOT rolled back after {result['sent']} photos")
        return
    details = event["details"]
    print(f"\nrollback drill: rolled back after {result['sent']} photos from elsewhere were "
          f"sent and reviewed ({result['seconds']:.0f} s); the canary answered "
          f"{details['answered']} predictions ({details['canary']['reviewed']} of them "
          f"reviewed, {details['canary']['accuracy']:.1%} right) against stable's "
          f"{details['stable']['accuracy']:.1%} of {details['stable']['reviewed']}")
    print(f"  {event['message']}")
    print(f"  canary predictions since the rollback: {answered}")


if __name__ == "__main__":
    main()
