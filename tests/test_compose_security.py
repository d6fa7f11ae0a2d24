"""The production stack's hardening (docker-compose.yml), checked without Docker:
only the proxy is reachable, Redis wants a password (RQ's jobs are pickles:
whoever writes to Redis runs code in the workers), every service has memory and
CPU limits, no process runs as root where the image is ours to set, and secrets
are files, not environment variables. test_compose.py has the readers these use.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
from redis import AuthenticationError, Redis, ResponseError

from core.settings import ROOT
from tests.factories import free_port, stop, wait_until
from tests.proxy_process import TEMPLATE, template_variables
from tests.test_compose import (
    APP_DOCKERFILE,
    build_of,
    environment,
    load_compose,
    long_running,
    mounts,
    settings_from,
    tokens,
    with_secret_files,
)

#: Variables that would hold a secret in plain text; their _FILE forms are the way.
PLAIN_SECRETS = {"SECRET_KEY", "POSTGRES_PASSWORD", "PGPASSWORD", "REDIS_PASSWORD", "METRICS_TOKEN",
                 "GF_SECURITY_ADMIN_PASSWORD"}
#: Official images that start as root and drop to a user of their own themselves.
DROP_ROOT_THEMSELVES = {
    "postgres": "the entrypoint re-executes itself as postgres (gosu)",
    "redis": "the entrypoint runs redis-server as redis (su-exec)",
    "proxy": "nginx's master binds port 80; its workers run as nginx",
}
UNITS = {"k": 2**10, "m": 2**20, "g": 2**30}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def size(text: str) -> int:
    """Compose's 512M, 2G (and Redis's 400mb): bytes."""
    number, unit = re.fullmatch(r"(\d+)([kmg])?b?", str(text).lower()).groups()
    return int(number) * UNITS.get(unit or "", 1)


def test_only_the_proxy_is_published(services: dict[str, dict[str, Any]]) -> None:
    assert [name for name, s in services.items() if s.get("ports")] == ["proxy"]
    web = services["web"]
    assert web["expose"] == [environment(web)["WEB_BIND"].rpartition(":")[2]]
    assert environment(services["proxy"])["PROXY_UPSTREAM"] == "web:" + web["expose"][0]


def test_the_site_trusts_exactly_the_proxy(services: dict[str, dict[str, Any]],
                                           monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    """One trusted hop is safe only because the proxy overwrites X-Forwarded-For."""
    web = with_secret_files(services["web"], tmp_path)
    assert settings_from(web, monkeypatch).trusted_proxies == 1
    assert re.search(r"^\s*proxy_set_header X-Forwarded-For \$remote_addr;",
                     TEMPLATE.read_text(), re.M)


def test_the_proxy_renders_the_template_the_tests_run(services: dict[str, dict[str, Any]],
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    """The image renders /etc/nginx/templates/X.template into conf.d/X, replacing its
    default server; the proxy's environment sets exactly what the template uses, and
    its body limit is the site's."""
    proxy = services["proxy"]
    assert proxy["image"].split(":")[0] == "nginx"
    [mount] = [m for m in mounts(proxy) if m.bind]
    assert (ROOT / mount.source).resolve() == TEMPLATE and mount.read_only
    assert mount.target == "/etc/nginx/templates/default.conf.template"
    env = environment(proxy)
    assert set(env) == template_variables(TEMPLATE.read_text())
    site = settings_from(with_secret_files(services["web"], tmp_path), monkeypatch)
    assert int(env["MAX_REQUEST_BYTES"]) == site.max_request_bytes == 200 * 2**20


def test_only_the_proxy_and_the_trainers_leave_the_internal_network(
        compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    """Redis, PostgreSQL, Serving, the site and the workers have no route out and
    no way in but through the proxy; the trainers download the ImageNet weights."""
    internal = {name for name, network in compose["networks"].items()
                if (network or {}).get("internal")}
    assert internal == {"backend"}
    for name, service in services.items():
        networks = set(service["networks"])
        outside = networks - internal
        if name in ("proxy", "trainer-worker", "trainer"):
            assert outside, name
        else:
            assert networks == internal, f"{name} is on {sorted(networks)}"
    assert "backend" in services["proxy"]["networks"]


def test_redis_requires_the_password_the_apps_are_given(
        services: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    """Redis's entrypoint script, run for real against redis-server (Docker's own
    entrypoint and chown left out): no password, no access; the apps' does."""
    redis = services["redis"]
    assert redis["secrets"] == ["redis_password"]
    for name in ("migrate", "web", "worker", "trainer-worker"):
        service = services[name]
        assert environment(service)["REDIS_PASSWORD_FILE"] == "/run/secrets/redis_password"
        assert "redis_password" in service["secrets"], name
    shell, flag, script, zeroth = redis["entrypoint"]
    assert (shell, flag) == ("sh", "-c")
    # Docker's entrypoint drops to the redis user only when redis-server comes first.
    assert "exec docker-entrypoint.sh redis-server " in script
    if not shutil.which("redis-server"):
        pytest.skip("no redis-server to run the entrypoint script with")
    password = "s3cret-Pass_word"
    (tmp_path / "redis_password").write_text(password + "\n")
    local = (script.replace("/run/secrets/redis_password", str(tmp_path / "redis_password"))
             .replace("/tmp/redis.conf", str(tmp_path / "redis.conf"))
             .replace(f"chown redis {tmp_path / 'redis.conf'} &&", "")
             .replace("exec docker-entrypoint.sh redis-server", "exec redis-server"))
    port = free_port()
    command = tokens(redis["command"]) + ["--port", str(port), "--bind", "127.0.0.1",
                                          "--dir", str(tmp_path), "--save", ""]
    with (tmp_path / "redis.log").open("w") as log:
        server = subprocess.Popen(["sh", "-c", local, zeroth, *command], stdout=log,
                                  stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: _pong(port, password), 20, "redis-server with the compose script",
                   detail=lambda: (tmp_path / "redis.log").read_text())
        with pytest.raises((AuthenticationError, ResponseError), match="(?i)auth"):
            Redis(port=port, socket_connect_timeout=2).set("job", "pickle")
        assert Redis(port=port, password=password).config_get("maxmemory")["maxmemory"] == str(
            size(command[command.index("--maxmemory") + 1]))
    finally:
        stop(server, timeout=10)
    assert oct((tmp_path / "redis.conf").stat().st_mode)[-3:] == "600"


def _pong(port: int, password: str) -> bool:
    try:
        return Redis(port=port, password=password, socket_connect_timeout=1).ping()
    except Exception:  # noqa: BLE001 (not up yet, in any way)
        return False


def test_every_service_has_memory_and_cpu_limits(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        limits = service.get("deploy", {}).get("resources", {}).get("limits", {})
        assert float(limits.get("cpus", 0)) > 0, f"{name} has no CPU limit"
        assert size(limits.get("memory", "0")) > 0, f"{name} has no memory limit"
    redis = services["redis"]
    command = tokens(redis["command"])
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"  # jobs never dropped
    maxmemory = size(command[command.index("--maxmemory") + 1])
    assert maxmemory < size(redis["deploy"]["resources"]["limits"]["memory"])


def test_no_service_runs_as_root_where_we_control_it(services: dict[str, dict[str, Any]]) -> None:
    left_to_the_image = set()
    for name, service in services.items():
        user = str(service.get("user", ""))
        assert user.split(":")[0] not in ("0", "root"), f"{name} runs as {user}"
        built = build_of(service)
        if built:
            [*_, last] = built[1].args("USER")
            assert last not in ("0", "root"), f"{built[1].path} ends as {last}"
        elif not user:
            left_to_the_image.add(name)
    assert left_to_the_image == set(DROP_ROOT_THEMSELVES)
    assert int(services["serving"]["user"].split(":")[0]) >= 1000


def test_each_image_owns_the_volumes_it_writes(services: dict[str, dict[str, Any]]) -> None:
    """A new named volume takes the owner of the folder it is mounted on: every
    writable one is a folder the image makes and gives to its user."""
    for name, service in services.items():
        built = build_of(service)
        if not built:
            continue
        dockerfile = built[1]
        user = dockerfile.args("USER")[-1]
        owned = {path for run in dockerfile.args("RUN")
                 for paths in re.findall(rf"chown {user}:{user} ([^&;|]+)", run)
                 for path in paths.split()}
        for mount in mounts(service):
            if not mount.bind and not mount.read_only:
                assert mount.target in owned, f"{name}: {mount.target} is not {user}'s"
    assert build_of(services["web"])[1].path == ROOT / APP_DOCKERFILE
    [models] = [m for m in services["serving"]["volumes"] if isinstance(m, dict)]
    assert models["read_only"] and models["volume"]["nocopy"]  # never seeds it as root


def test_secrets_are_files_not_variables(compose: dict[str, Any]) -> None:
    declared = compose["secrets"]
    files = set()
    for name, secret in declared.items():
        assert set(secret) == {"file"}, f"secret {name} is not a file"
        assert PurePosixPath(secret["file"]) == PurePosixPath("secrets", name)
        files.add(secret["file"].removeprefix("./"))
    for name, service in compose["services"].items():
        env = environment(service)
        assert not PLAIN_SECRETS & set(env), f"{name} sets {PLAIN_SECRETS & set(env)}"
        for key, value in env.items():
            if "://" in value:
                assert urlsplit(value).password is None, f"{name}: {key} holds a password"
            if value.startswith("/run/secrets/"):
                secret = PurePosixPath(value).name
                assert key.endswith("_FILE") and secret in service.get("secrets", []), key
        assert set(service.get("secrets", [])) <= set(declared), name
    # The one exception: the optional first administrator of a one-off, empty by default.
    assert [n for n, s in compose["services"].items()
            if "ADMIN_PASSWORD" in environment(s)] == ["migrate"]
    assert environment(compose["services"]["migrate"])["ADMIN_PASSWORD"] == ""
    made = re.search(r"^SECRET_FILES := (.+)$", (ROOT / "Makefile").read_text(), re.M)
    assert set(made.group(1).split()) == files  # `make secrets` makes each one
    for path in files:
        ignored = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT)
        assert ignored.returncode == 0, f"{path} is not ignored by git"


def test_the_proxy_starts_once_the_site_answers(services: dict[str, dict[str, Any]]) -> None:
    proxy = services["proxy"]
    assert "proxy" in long_running(services) and proxy["restart"] == "unless-stopped"
    assert proxy["depends_on"]["web"]["condition"] == "service_healthy"
