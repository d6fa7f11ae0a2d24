"""The production stack (docker-compose.yml and its Dockerfiles), checked without Docker.

No machine of this project runs a Docker engine, so a broken compose file would
first show up in production. These tests validate the file against the Compose
Specification's JSON schema (as vendored by check-jsonschema), then check what a
schema cannot see: that paths, settings, commands, volumes and health checks
agree with the code in this repository.
"""

from __future__ import annotations

import ast
import copy
import fnmatch
import importlib
import importlib.resources
import importlib.util
import json
import re
import shlex
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from secrets import token_urlsafe
from threading import Thread
from types import ModuleType
from typing import Any

import click
import jsonschema
import pytest
import yaml
from redis import Redis, RedisError
from rq import SimpleWorker
from sqlalchemy.engine import make_url

from core.settings import ROOT, Settings
from tests.factories import free_port
from tests.proxy_process import TEMPLATE, template_variables
from tests.web_fixtures import HEALTH_REDIS_DB, REDIS

COMPOSE_FILE = ROOT / "docker-compose.yml"
APP_DOCKERFILE = "docker/app.Dockerfile"
#: Variables the images we run read themselves, beside core/settings.py's: the
#: official images' own, and the ones the proxy's template refers to.
THIRD_PARTY_ENV = {
    "postgres": {"POSTGRES_USER", "POSTGRES_PASSWORD_FILE", "POSTGRES_DB", "PGDATA"},
    "nginx": template_variables(TEMPLATE.read_text()),
    "app": {"GUNICORN_CMD_ARGS"},  # gunicorn's extra flags
    "prom/prometheus": set(),  # configured by its flags and prometheus.yml
    # Grafana's GF_<SECTION>_<KEY> overrides of grafana.ini (and __FILE for a file's
    # content), the ones the compose file sets.
    "grafana/grafana": {"GF_SECURITY_ADMIN_USER", "GF_SECURITY_ADMIN_PASSWORD__FILE",
                        "GF_SECURITY_COOKIE_SECURE", "GF_USERS_ALLOW_SIGN_UP",
                        "GF_SERVER_ROOT_URL", "GF_SERVER_SERVE_FROM_SUB_PATH",
                        "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH",
                        "GF_ANALYTICS_REPORTING_ENABLED", "GF_ANALYTICS_CHECK_FOR_UPDATES"},
}
#: Files whose os.environ reads are the settings an app container may set.
SETTINGS_READERS = [*sorted(p.relative_to(ROOT).as_posix()
                            for p in (ROOT / "core" / "settings").glob("*.py")),
                    "gunicorn.conf.py", "frontend/commands.py"]
#: core/settings/readers.py's readers, each called with the variable's name first.
SETTINGS_READER_CALLS = ("get", "getenv", "env_path", "env_int", "env_fraction", "env_secret",
                         "env_bool", "env_number", "env_text")
APP_SETTINGS = ["APP_ENV", "SECRET_KEY", "DATABASE_URL", "REDIS_URL", "SERVING_URL",
                "MODEL_NAME", "MODEL_BASE_PATH", "UPLOAD_DIR"]


# --- compose's variable interpolation -------------------------------------------------

class InterpolationError(ValueError):
    """A required variable (${NAME:?message}) is missing: compose refuses to start."""


_REFERENCE = re.compile(r"\$(?:(\$)|\{([^}]*)\}|([A-Za-z_]\w*))")
_BRACED = re.compile(r"([A-Za-z_]\w*)(?:(:?[-?+])(.*))?", re.DOTALL)


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """${NAME}, $NAME, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME:+alt}, $$."""

    def substitute(match: re.Match[str]) -> str:
        escaped, braced, bare = match.groups()
        if escaped:
            return "$"
        if bare:
            return env.get(bare, "")
        parts = _BRACED.fullmatch(braced)
        if parts is None:
            raise InterpolationError(f"invalid interpolation ${{{braced}}}")
        name, op, arg = parts.groups()
        value = env.get(name)
        unset = value is None or (op is not None and op.startswith(":") and value == "")
        if op in (":-", "-"):
            return arg if unset else value
        if op in (":?", "?"):
            if unset:
                raise InterpolationError(f"{name}: {arg}")
            return value
        if op in (":+", "+"):
            return "" if unset else arg
        return value or ""

    return _REFERENCE.sub(substitute, text)


def interpolated(node: Any, env: Mapping[str, str]) -> Any:
    """Compose interpolates values after parsing the YAML, never keys or comments."""
    if isinstance(node, dict):
        return {key: interpolated(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolated(value, env) for value in node]
    return interpolate(node, env) if isinstance(node, str) else node


def load_compose(env: Mapping[str, str] = {}) -> dict[str, Any]:  # noqa: B006 (read only)
    return interpolated(yaml.safe_load(COMPOSE_FILE.read_text()), env)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


# --- reading services and Dockerfiles --------------------------------------------------

@dataclass(frozen=True)
class Mount:
    source: str  # a volume's name, a host path, or "" for an anonymous volume
    target: str
    read_only: bool

    @property
    def bind(self) -> bool:
        return self.source.startswith((".", "/", "~"))


def mounts(service: dict[str, Any]) -> list[Mount]:
    found = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            found.append(Mount(volume.get("source", ""), volume["target"],
                               bool(volume.get("read_only"))))
            continue
        parts = volume.split(":")
        if len(parts) == 1:
            parts = ["", parts[0]]
        found.append(Mount(parts[0], parts[1], len(parts) > 2 and "ro" in parts[2].split(",")))
    return found


def volume_location(service: dict[str, Any], path: str) -> tuple[str, PurePosixPath]:
    """Which volume (or host path) holds a container path, and where inside it."""
    target = PurePosixPath(path)
    best = max((m for m in mounts(service) if target.is_relative_to(m.target)),
               key=lambda m: len(m.target), default=None)
    assert best is not None, f"{path} is on no volume of this service"
    return best.source, target.relative_to(best.target)


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def tokens(command: str | list[str]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else list(command)


def healthcheck_tokens(service: dict[str, Any]) -> list[str]:
    test = tokens(service["healthcheck"]["test"])
    if test[0] == "CMD-SHELL":
        return shlex.split(" ".join(test[1:]))
    return test[1:] if test[0] == "CMD" else test


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    """Dependency -> condition (the short list form means service_started)."""
    deps = service.get("depends_on", {})
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


@dataclass(frozen=True)
class Dockerfile:
    path: Path
    instructions: list[tuple[str, str]]  # (KEYWORD, arguments)

    @classmethod
    def read(cls, path: Path) -> Dockerfile:
        instructions, pending = [], ""
        for line in path.read_text().splitlines():
            if line.lstrip().startswith("#"):  # comments, even inside a continuation
                continue
            pending += line.rstrip()
            if pending.endswith("\\"):
                pending = pending[:-1] + " "
                continue
            if pending.strip():
                keyword, _, args = pending.strip().partition(" ")
                instructions.append((keyword.upper(), args.strip()))
            pending = ""
        return cls(path, instructions)

    def args(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def exec_form(self, keyword: str) -> list[str]:
        """The last CMD or ENTRYPOINT, as an argument list."""
        args = self.args(keyword)
        if not args:
            return []
        return json.loads(args[-1]) if args[-1].startswith("[") else shlex.split(args[-1])

    def copied(self) -> dict[str, str]:
        """Container path -> path in the build context, for every COPY from the context."""
        files: dict[str, str] = {}
        workdir = PurePosixPath("/")
        for keyword, args in self.instructions:
            if keyword == "WORKDIR":
                workdir = workdir / args
            elif keyword in ("COPY", "ADD"):
                words = shlex.split(args)
                if any(w.startswith("--from") for w in words):
                    continue
                *sources, dest = [w for w in words if not w.startswith("--")]
                into = workdir / dest
                directory = dest.endswith(("/", ".")) or len(sources) > 1
                for source in sources:
                    target = into / PurePosixPath(source).name if directory else into
                    files[str(target)] = source
        return files

    def pip_extras(self) -> set[str]:
        """The extras of every requirement that a `pip install` line names."""
        extras: set[str] = set()
        for run in self.args("RUN"):
            for install in re.findall(r"pip install[^&;|]*", run):
                for names in re.findall(r"\[([\w,-]+)\]", install):
                    extras.update(names.split(","))
        return extras


def build_of(service: dict[str, Any]) -> tuple[Path, Dockerfile] | None:
    build = service.get("build")
    if build is None:
        return None
    if isinstance(build, str):
        build = {"context": build}
    context = ROOT / build.get("context", ".")
    return context, Dockerfile.read(context / build.get("dockerfile", "Dockerfile"))


def app_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services.items()
            if s.get("build", {}).get("dockerfile") == APP_DOCKERFILE}


def long_running(services: dict[str, dict[str, Any]]) -> list[str]:
    """Services `up` starts and keeps: not in a profile, not awaited to complete."""
    one_shot = {dep for s in services.values() for dep, condition in depends_on(s).items()
                if condition == "service_completed_successfully"}
    return [name for name, s in services.items() if not s.get("profiles") and name not in one_shot]


def dockerignored(path: str) -> bool:
    """.dockerignore's verdict on a context path: the last matching pattern wins,
    and excluding a folder excludes what is in it. (fnmatch's * also crosses /,
    so this errs towards "ignored", which fails loudly rather than silently.)"""
    ignored = False
    parts = PurePosixPath(path).parts
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = line.strip()
        if pattern and not pattern.startswith("#"):
            negated = pattern.startswith("!")
            pattern = pattern.lstrip("!").strip("/")
            if any(_ignore_match(candidate, pattern) for candidate in candidates):
                ignored = not negated
    return ignored


def _ignore_match(candidate: str, pattern: str) -> bool:
    if fnmatch.fnmatchcase(candidate, pattern):
        return True
    # "**/name" matches name at any depth, the top level included.
    return pattern.startswith("**/") and fnmatch.fnmatchcase(
        candidate.rsplit("/", 1)[-1], pattern[3:])


def settings_names() -> set[str]:
    """Every environment variable the project's processes read, found in their source."""
    names = set()
    for relative in SETTINGS_READERS:
        for node in ast.walk(ast.parse((ROOT / relative).read_text())):
            if isinstance(node, ast.Call) and node.args:
                func = node.func
                called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                first = node.args[0]
                if called in SETTINGS_READER_CALLS and (
                        isinstance(first, ast.Constant) and isinstance(first.value, str)):
                    names.add(first.value)
                    if called == "env_secret":  # NAME, or the file NAME_FILE names
                        names.add(f"{first.value}_FILE")
    return {name for name in names if name.isupper()}


# --- the schema -------------------------------------------------------------------------

def compose_validator() -> jsonschema.protocols.Validator:
    """The Compose Specification's schema, from the installed check-jsonschema.

    The validator class is the one the schema's $schema names (draft 2020-12
    today). No format checker: the schema uses no `format` keyword, and compose's
    durations ("10s") are not the ISO 8601 durations JSON Schema's would expect.
    """
    resource = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    schema = json.loads(resource.joinpath("compose-spec.json").read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def test_compose_file_matches_the_compose_specification(compose: dict[str, Any]) -> None:
    compose_validator().validate(compose)


@pytest.mark.parametrize("breakage", [
    lambda c: c["services"]["web"].update(ports="oops"),
    lambda c: c.update(servics={}),
    lambda c: c["services"]["worker"].update(restart_policy="always"),
    lambda c: c["services"]["redis"]["healthcheck"].update(retries=[3]),
], ids=["ports-not-a-list", "unknown-top-level-key", "unknown-service-key", "bad-retries"])
def test_schema_rejects_a_broken_copy(compose: dict[str, Any],
                                      breakage: Callable[[dict[str, Any]], None]) -> None:
    """The validator is live: the same check fails on a deliberately broken file."""
    broken = copy.deepcopy(compose)
    breakage(broken)
    with pytest.raises(jsonschema.ValidationError):
        compose_validator().validate(broken)


def test_compose_refuses_an_unset_required_variable() -> None:
    """The interpolation this module relies on fails as compose does."""
    with pytest.raises(InterpolationError, match="NAME: say so"):
        interpolate("${NAME:?say so}", {})
    assert interpolate("${NAME:-x} $$NAME ${NAME}", {"NAME": "y"}) == "y $NAME y"


# --- files the stack refers to ----------------------------------------------------------

def test_build_contexts_and_their_copies_exist(services: dict[str, dict[str, Any]]) -> None:
    built = [build_of(s) for s in services.values() if build_of(s)]
    assert {d.path.relative_to(ROOT).as_posix() for _, d in built} >= {
        APP_DOCKERFILE, "trainer/Dockerfile"}
    for context, dockerfile in built:
        for destination, source in dockerfile.copied().items():
            assert (context / source).exists(), f"{dockerfile.path}: COPY {source} is missing"
            assert not dockerignored(source), f"{source} ({destination}) is in .dockerignore"


@pytest.mark.parametrize("path", [".env", "secrets/secret_key", ".venv/bin/python", ".git/HEAD",
                                  "var/app.db", "models/classifier/1/saved_model.pb",
                                  "dataset/apple/1.jpg"])
def test_dockerignore_keeps_secrets_and_bulk_out(path: str) -> None:
    assert dockerignored(path)


def test_bind_mounts_exist(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for mount in mounts(service):
            if mount.bind:
                assert (ROOT / mount.source).exists(), f"{name} mounts missing {mount.source}"


def test_named_volumes_are_declared(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for mount in mounts(service):
            if mount.source and not mount.bind:
                assert mount.source in compose["volumes"], f"{name}: volume {mount.source}?"


def test_images_are_pinned(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        if "build" not in service:
            image = service["image"]
            assert ":" in image and not image.endswith(":latest"), f"{name}: pin {image}"


# --- environment ------------------------------------------------------------------------

def test_every_variable_a_service_sets_is_read_by_something(
        services: dict[str, dict[str, Any]]) -> None:
    """A misspelt setting is silently ignored: the process runs on its default."""
    project = settings_names()
    assert {"DATABASE_URL", "SECRET_KEY", "WEB_BIND", "ADMIN_PASSWORD"} <= project
    for name, service in services.items():
        if "build" in service:  # our images: the app's and the trainer's
            known = project | THIRD_PARTY_ENV["app"]
        else:
            known = THIRD_PARTY_ENV.get(service.get("image", "").split(":")[0], set())
        unknown = set(environment(service)) - known
        assert not unknown, f"{name} sets variables nothing reads: {sorted(unknown)}"


def with_secret_files(service: dict[str, Any], folder: Path) -> dict[str, str]:
    """The service's environment with its /run/secrets/ files made in `folder`, each
    holding a random value of its own, as `make secrets` makes them."""
    env = environment(service)
    for secret in service.get("secrets", []):
        (folder / secret).write_text(token_urlsafe(48) + "\n")
    for key, value in env.items():
        if value.startswith("/run/secrets/"):
            env[key] = str(folder / PurePosixPath(value).name)
    return env


def secret_of(service: dict[str, Any], variable: str, folder: Path) -> str:
    """The value a service's NAME_FILE variable names, read from `folder`."""
    return (folder / PurePosixPath(environment(service)[variable]).name).read_text().strip()


SETTINGS_SERVICES = ["migrate", "web", "worker", "trainer-worker"]


@pytest.mark.parametrize("name", SETTINGS_SERVICES)
def test_app_environment_makes_valid_production_settings(
        name: str, services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    """Secrets come from the files compose mounts: the database and Redis URLs
    then carry the very passwords the postgres and redis services are given."""
    assert set(app_services(services)) <= set(SETTINGS_SERVICES)
    postgres = environment(services["postgres"])
    service = services[name]
    env = with_secret_files(service, tmp_path)
    assert set(APP_SETTINGS) - {"SECRET_KEY"} <= set(env), f"{name} lacks some of {APP_SETTINGS}"
    settings = settings_from(env, monkeypatch)
    assert settings.production
    assert settings.secret_key == secret_of(service, "SECRET_KEY_FILE", tmp_path)
    url = make_url(settings.database_url)
    assert url.drivername == "postgresql+psycopg"
    assert (url.host, url.username, url.database) == (
        "postgres", postgres["POSTGRES_USER"], postgres["POSTGRES_DB"])
    assert PurePosixPath(env["POSTGRES_PASSWORD_FILE"]).name == PurePosixPath(
        postgres["POSTGRES_PASSWORD_FILE"]).name
    assert url.password == secret_of(service, "POSTGRES_PASSWORD_FILE", tmp_path)
    redis = Redis.from_url(settings.redis_url).connection_pool.connection_kwargs
    assert redis["password"] == secret_of(service, "REDIS_PASSWORD_FILE", tmp_path)


def settings_from(env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """core.settings as the container would build it, free of this shell's variables."""
    for name in settings_names():
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings.from_env()


def test_urls_name_services_on_their_ports(services: dict[str, dict[str, Any]]) -> None:
    serving_port = next(int(flag.split("=")[1]) for flag in services["serving"]["command"]
                        if flag.startswith("--rest_api_port="))
    ports = {"postgres": 5432, "redis": 6379, "serving": serving_port}
    for name, service in app_services(services).items():
        env = environment(service)
        for variable in ("DATABASE_URL", "REDIS_URL", "SERVING_URL"):
            url = make_url(env[variable]) if variable == "DATABASE_URL" else None
            host, port = (url.host, url.port) if url else re.match(
                r"\w+://([^:/]+):(\d+)", env[variable]).groups()
            assert host in services, f"{name}: {variable} names no service"
            assert int(port) == ports[host], f"{name}: {variable} has the wrong port"


# --- dependencies and health ------------------------------------------------------------

def test_apps_wait_for_the_database_redis_and_the_migration(
        services: dict[str, dict[str, Any]]) -> None:
    for name, service in app_services(services).items():
        deps = depends_on(service)
        assert deps.get("postgres") == "service_healthy", name
        if name != "migrate":
            assert deps.get("redis") == "service_healthy", name
            assert deps.get("migrate") == "service_completed_successfully", name
    assert tokens(services["migrate"]["command"])[-2:] == ["db", "upgrade"]
    for name, service in services.items():
        for dep in depends_on(service):
            assert dep in services and not services[dep].get("profiles"), f"{name} -> {dep}"


def test_every_long_running_service_has_a_healthcheck(
        services: dict[str, dict[str, Any]]) -> None:
    running = long_running(services)
    assert {"proxy", "serving", "postgres", "redis", "web", "worker"} <= set(running)
    for name in running:
        check = services[name].get("healthcheck", {})
        assert check.get("test") and not check.get("disable"), f"{name} has no healthcheck"
        assert services[name].get("restart") in ("unless-stopped", "always"), name
    assert healthcheck_tokens(services["postgres"])[0] == "pg_isready"
    # With the password (REDISCLI_AUTH keeps it off redis-cli's command line).
    auth, *check = healthcheck_tokens(services["redis"])
    assert auth == "REDISCLI_AUTH=$(cat /run/secrets/redis_password)"
    assert check[:2] == ["redis-cli", "ping"]


def test_redis_persists_its_queue(services: dict[str, dict[str, Any]]) -> None:
    command = tokens(services["redis"]["command"])
    assert command[command.index("--appendonly") + 1] == "yes"
    source, _ = volume_location(services["redis"], "/data/appendonlydir")
    assert source == "redis-data"
    source, _ = volume_location(services["postgres"], "/var/lib/postgresql/data/PG_VERSION")
    assert source == "postgres-data"


def test_workers_can_scale(services: dict[str, dict[str, Any]]) -> None:
    """`--scale worker=N` makes N containers: nothing in them may be unique."""
    worker = services["worker"]
    for key in ("container_name", "ports", "hostname"):
        assert key not in worker, f"worker sets {key}: it cannot scale"
    assert "--name" not in tokens(worker["command"]), "RQ worker names must differ"


def test_uploads_are_shared_by_the_site_and_the_workers(
        services: dict[str, dict[str, Any]]) -> None:
    web, worker = services["web"], services["worker"]
    upload_dir = environment(web)["UPLOAD_DIR"]
    assert volume_location(web, upload_dir) == volume_location(worker, upload_dir)
    writable = {m.target: not m.read_only for m in mounts(web)}
    assert writable[upload_dir]


def test_the_workers_can_purge_old_uploads(services: dict[str, dict[str, Any]]) -> None:
    """The retention purge deletes images from the uploads volume and notes them in the
    reports on the models volume: both the site's, both writable in the workers."""
    web, worker = services["web"], services["worker"]
    env = environment(worker)
    writable = {m.target: not m.read_only for m in mounts(worker)}
    for path in (env["UPLOAD_DIR"], env["MODEL_BASE_PATH"]):
        assert volume_location(worker, path) == volume_location(web, path), path
        assert writable[path], f"{path} is read-only in the workers"
    assert int(env["RETENTION_DAYS"]) >= 0


# --- TF Serving, the trainer and the models volume --------------------------------------

def model_configs() -> list[tuple[str, str]]:
    """(name, base_path) of every model in serving/models.config."""
    text = re.sub(r"#.*", "", (ROOT / "serving/models.config").read_text())
    return re.findall(r'name:\s*"([^"]+)"\s*base_path:\s*"([^"]+)"', text)


def test_serving_reads_mounted_config_files(services: dict[str, dict[str, Any]]) -> None:
    serving = services["serving"]
    binds = {m.target: m.source for m in mounts(serving) if m.bind}
    files = [flag.split("=", 1)[1] for flag in serving["command"] if flag.endswith(".config")]
    assert len(files) == 3
    for path in files:
        assert path in binds, f"{path} is not mounted into serving"
        assert (ROOT / binds[path]).is_file()


def test_site_serving_and_trainer_meet_on_the_models_volume(
        compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    """Serving's base_path, the site's reports and the documented train command's
    output are one place, on one volume."""
    [(model, base_path)] = model_configs()
    source, inside = volume_location(services["serving"], base_path)
    assert source in compose["volumes"]
    env = environment(services["web"])
    assert env["MODEL_NAME"] == model
    web_models = PurePosixPath(env["MODEL_BASE_PATH"]) / env["MODEL_NAME"]
    assert volume_location(services["web"], str(web_models)) == (source, inside)
    train = re.search(r"trainer train --data (\S+) --out (\S+) --name (\S+)",
                      COMPOSE_FILE.read_text())
    assert train, "the header shows how to train"
    data, out, name = train.groups()
    trainer = services["trainer"]
    assert volume_location(trainer, str(PurePosixPath(out) / name)) == (source, inside)
    assert not next(m for m in mounts(trainer) if m.source == source).read_only
    assert volume_location(trainer, data)[0].startswith(".")


def test_the_trainer_worker_learns_from_the_uploads_and_promotes_into_the_served_folder(
        services: dict[str, dict[str, Any]]) -> None:
    """Its runs read reviewed uploads and the base photos, and promote a candidate by
    renaming it within the volume Serving polls: one volume, mounted writable."""
    [(_, base_path)] = model_configs()
    runner, web = services["trainer-worker"], services["web"]
    env = environment(runner)
    assert tokens(runner["command"]) == ["worker"]
    assert volume_location(runner, base_path) == volume_location(services["serving"], base_path)
    models = next(m for m in mounts(runner) if m.target == env["MODEL_BASE_PATH"])
    assert not models.read_only
    assert volume_location(runner, env["UPLOAD_DIR"]) == volume_location(
        web, environment(web)["UPLOAD_DIR"])
    assert volume_location(runner, env["DATASET_DIR"])[0].startswith(".")
    assert env["FEATURE_CACHE_DIR"] and volume_location(runner, env["FEATURE_CACHE_DIR"])
    for name in ("REDIS_URL", "DATABASE_URL", "MODEL_NAME"):
        assert env[name] == environment(web)[name], name


def test_tensorflow_releases_agree(services: dict[str, dict[str, Any]]) -> None:
    """Serving must be as new as the TensorFlow that exports, and the protos match it."""
    serving = services["serving"]["image"].split(":")[1]
    ml = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]["ml"]
    [exporter] = [r.split("==")[1] for r in ml if r.startswith("tensorflow-cpu==")]
    trainer = Dockerfile.read(ROOT / "trainer/Dockerfile")
    [protos] = re.findall(r"tensorflow-serving-api==([\d.]+)", " ".join(trainer.args("RUN")))
    assert serving == exporter == protos


# --- the images -------------------------------------------------------------------------

def test_app_image_has_no_tensorflow() -> None:
    """The site and workers reach the model through Serving: no TensorFlow in them."""
    dockerfile = Dockerfile.read(ROOT / APP_DOCKERFILE)
    assert dockerfile.args("FROM") == ["python:3.11-slim"]
    assert dockerfile.pip_extras() == {"web"}
    assert not any(re.search(r"tensorflow|keras", run, re.I) for run in dockerfile.args("RUN"))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    installed = project["dependencies"] + project["optional-dependencies"]["web"]
    assert not [r for r in installed if re.match(r"(tensorflow|keras|tf-)", r, re.I)]


def test_app_image_runs_as_a_user() -> None:
    users = Dockerfile.read(ROOT / APP_DOCKERFILE).args("USER")
    assert users and users[-1] not in ("root", "0")


def test_trainer_image_installs_the_ml_extra() -> None:
    dockerfile = Dockerfile.read(ROOT / "trainer/Dockerfile")
    assert dockerfile.pip_extras() == {"ml"}
    assert dockerfile.exec_form("ENTRYPOINT") == ["python", "-m", "trainer"]
    assert (ROOT / "trainer/__main__.py").is_file()


def app_commands(services: dict[str, dict[str, Any]]) -> Iterator[tuple[str, list[str]]]:
    """What each app container runs: its command (or the image's) and its healthcheck."""
    cmd = Dockerfile.read(ROOT / APP_DOCKERFILE).exec_form("CMD")
    for name, service in app_services(services).items():
        yield name, tokens(service.get("command") or cmd)
        if "healthcheck" in service:
            yield f"{name} healthcheck", healthcheck_tokens(service)
    for line in re.findall(r"docker compose run --rm web (.+)", COMPOSE_FILE.read_text()):
        yield "header", shlex.split(line)


def test_app_commands_exist(services: dict[str, dict[str, Any]], tmp_path: Path,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    """python -m MODULE, script paths, gunicorn's app and config, flask's commands."""
    image = Dockerfile.read(ROOT / APP_DOCKERFILE).copied()
    seen = set()
    for name, command in app_commands(services):
        program, args = command[0], command[1:]
        seen.add(program)
        if program == "python" and args[0] == "-m":
            assert (ROOT / args[1] / "__main__.py").is_file(), f"{name}: {command}"
        elif program == "python":
            assert args[0] in image, f"{name}: {args[0]} is not in the image"
        elif program == "gunicorn":
            config = args[args.index("--config") + 1]
            assert config in image, f"{name}: {config} is not in the image"
            module, _, call = args[-1].partition(":")
            assert callable(getattr(importlib.import_module(module), call.split("(")[0]))
        elif program == "flask":
            flask_command(args, tmp_path, monkeypatch)
        else:
            raise AssertionError(f"{name}: nothing checks {command}")
    assert {"python", "gunicorn", "flask"} <= seen


def flask_command(args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Resolves `flask --app M CMD [SUB] ARGS` against the app's real CLI, and
    parses ARGS with it (without running it)."""
    assert args[0] == "--app"
    module: ModuleType = importlib.import_module(args[1])
    settings = replace(settings_from({}, monkeypatch),
                       database_url=f"sqlite:///{tmp_path / 'cli.db'}")
    command: click.Command = module.create_app({"SETTINGS": settings}).cli
    rest = args[2:]
    while isinstance(command, click.Group):
        assert rest[0] in command.commands, f"flask has no command {rest[0]}"
        command, rest = command.commands[rest[0]], rest[1:]
    command.make_context(command.name, list(rest))


# --- the health check script ------------------------------------------------------------

def healthcheck_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("healthcheck", ROOT / "docker/healthcheck.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        code = self.status if self.path == "/healthz" else 404
        self.send_response(code)
        self.end_headers()
        self.wfile.write(b'{"status": "ok"}')

    def log_message(self, *args: object) -> None:
        pass


def test_web_healthcheck_needs_a_200(monkeypatch: pytest.MonkeyPatch) -> None:
    check = healthcheck_module()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("WEB_BIND", f"0.0.0.0:{server.server_port}")
    try:
        assert check.main(["web"]) == 0
        monkeypatch.setattr(_Health, "status", 503)
        assert check.main(["web"]) == 1
    finally:
        server.shutdown()
        server.server_close()
    assert check.main(["web"]) == 1  # nothing listening
    assert check.main(["nonsense"]) == 1


def test_worker_healthcheck_needs_a_registered_worker_here(
        monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"{REDIS}/{HEALTH_REDIS_DB}"
    connection = Redis.from_url(url, socket_connect_timeout=2)
    try:
        connection.ping()
    except RedisError as exc:
        pytest.skip(f"needs Redis at {url}: {exc}")
    check = healthcheck_module()
    monkeypatch.setenv("REDIS_URL", url)
    worker = SimpleWorker(["healthcheck-test"], connection=connection)
    worker.register_birth()
    try:
        assert check.main(["worker"]) == 0
        monkeypatch.setattr(check.socket, "gethostname", lambda: "another-container")
        assert check.main(["worker"]) == 1  # workers elsewhere do not count
    finally:
        worker.register_death()
        connection.delete(worker.key)
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    assert check.main(["worker"]) == 1  # Redis down


