"""The monitoring stack's files, checked without Docker: Grafana's provisioned
dashboard queries only metrics that something really exports (the site's
/metrics scraped from a real app, a worker's registry, TF Serving's names), on
the data source Grafana is given; Prometheus scrapes services of the compose
file on the ports and paths they serve."""

from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest

from core.settings import ROOT
from tests.factories import add_answers, add_timed_answers, model_version_files, scraped
from tests.test_compose import environment, load_compose, mounts

GRAFANA = ROOT / "docker" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "dashboards.yml"
PROMETHEUS = ROOT / "docker" / "prometheus" / "prometheus.yml"

#: TF Serving's own series, as its Prometheus exporter names them: "/" becomes ":",
#: a Counter keeps its name (no _total), a Sampler is a histogram in microseconds.
#: From tensorflow_serving/servables/tensorflow/util.cc ("/tensorflow/serving/
#: request_count", "/tensorflow/serving/request_latency"). The embedded Serving's
#: (serving/metrics.py) differ in units and suffixes; the stack runs the real one.
TF_SERVING = {":tensorflow:serving:request_count",
              ":tensorflow:serving:request_latency_bucket",
              ":tensorflow:serving:request_latency_sum",
              ":tensorflow:serving:request_latency_count"}
#: Series Prometheus makes itself for every target.
PROMETHEUS_OWN = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"' + r"|'(?:[^'\\]|\\.)*'")
_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_NAME = re.compile(r"(?<![\w:.])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "by", "without", "on",
             "ignoring", "group_left", "group_right"}


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: every bare name that is not a
    function call, a keyword, a label inside {...} or a label list of by (...)."""
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = _LABEL_LISTS.sub("", text)
    return {name for name in _NAME.findall(text) if name.lower() not in _KEYWORDS}


def test_promql_names_are_read_as_prometheus_reads_them() -> None:
    expr = ('histogram_quantile(0.99, sum by (le, version) (rate(a_bucket{status="x y",'
            ' le!="1"}[$__rate_interval]))) / on (version) group_left b_total / 1e6'
            ' > bool 0 and :tensorflow:serving:request_count offset 5m')
    assert promql_metric_names(expr) == {"a_bucket", "b_total",
                                         ":tensorflow:serving:request_count"}
    assert promql_metric_names("sum(rate(nothing_here[5m]))") == {"nothing_here"}


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those inside collapsed rows too."""
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found += panel.get("panels", [])
    return found


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    return [(panel["title"], target["expr"]) for panel in panels(dashboard)
            for target in panel.get("targets", []) if "expr" in target]


@pytest.fixture(params=DASHBOARDS, ids=[path.name for path in DASHBOARDS])
def dashboard(request: pytest.FixtureRequest) -> dict[str, Any]:
    return json.loads(request.param.read_text())


@pytest.fixture
def exported(client, db, env) -> set[str]:
    """Every sample name the site's /metrics and a worker's registry give once
    there is traffic: records of two versions, a drifting one among them."""
    from core.rollout import drift
    from worker import metrics

    add_timed_answers(db, 1, "stable", [1, 2])
    add_timed_answers(db, 2, "canary", [3], status="failed", label=None)
    folder = Path(env["MODEL_BASE_PATH"]) / env["MODEL_NAME"]
    model_version_files(folder, 2, metrics={"reference": drift.reference(
        ["circle", "square"], ["circle", "square"] * 5, [0.9] * 10)})
    add_answers(db, 2, {("circle", 0.7): 5})
    metrics.job_done(0.5, {"done": 1, "failed": 0, "skipped": 0})
    metrics.answered(1, "stable", "done", 0.05)
    metrics.shadow_compared(2, True)
    site = scraped(client.get("/metrics").get_data(as_text=True))
    worker = scraped(generate_latest(metrics.REGISTRY).decode())
    return {name for name, _ in site} | {name for name, _ in worker}


def test_every_dashboard_query_names_exported_metrics(dashboard: dict[str, Any],
                                                      exported: set[str]) -> None:
    assert {"classifier_drift_psi", "classifier_queue_depth",
            "classifier_worker_predictions_total"} <= exported  # the scrape saw traffic
    known = exported | TF_SERVING | PROMETHEUS_OWN
    found = queries(dashboard)
    assert found, "the dashboard has no queries"
    for title, expr in found:
        names = promql_metric_names(expr)
        assert names, f"{title}: no metric in {expr!r}"
        assert names <= known, f"{title}: nothing exports {sorted(names - known)}"
    queried = {name for _, expr in found for name in promql_metric_names(expr)}
    for shown in ("classifier_worker_predictions_total", "classifier_result_seconds",
                  "classifier_queue_depth", "classifier_queue_wait_seconds",
                  "classifier_canary_share", "classifier_rollbacks_total",
                  "classifier_drift_psi", ":tensorflow:serving:request_count",
                  ":tensorflow:serving:request_latency_bucket"):
        assert shown in queried, f"no panel shows {shown}"


def test_every_panel_uses_the_provisioned_datasource(dashboard: dict[str, Any]) -> None:
    [source] = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    assert source["type"] == "prometheus"
    compose = load_compose()["services"]
    host, port = re.fullmatch(r"http://([\w-]+):(\d+)", source["url"]).groups()
    assert host == "prometheus" and host in compose and int(port) == 9090  # its default port
    wanted = {"type": "prometheus", "uid": source["uid"]}
    ids = []
    for panel in panels(dashboard):
        ids.append(panel["id"])
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == wanted, panel["title"]
        for target in panel["targets"]:
            assert target.get("datasource", wanted) == wanted, panel["title"]
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), panel["title"]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    assert dashboard["uid"] and dashboard["title"]


def test_grafana_reads_the_provisioning_and_dashboards_it_is_given() -> None:
    grafana = load_compose()["services"]["grafana"]
    binds = {PurePosixPath(m.target): (ROOT / m.source).resolve() for m in mounts(grafana)
             if m.bind and m.read_only}
    assert binds[PurePosixPath("/etc/grafana/provisioning")] == GRAFANA / "provisioning"
    [provider] = yaml.safe_load(PROVIDERS.read_text())["providers"]
    assert binds[PurePosixPath(provider["options"]["path"])] == GRAFANA / "dashboards"
    home = PurePosixPath(environment(grafana)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert (binds[home.parent] / home.name).is_file()
    secret = PurePosixPath(environment(grafana)["GF_SECURITY_ADMIN_PASSWORD__FILE"]).name
    assert secret in grafana["secrets"]


def test_prometheus_scrapes_services_on_the_ports_they_serve(app) -> None:
    compose = load_compose()
    services = compose["services"]
    prometheus = services["prometheus"]
    config_flag = next(f for f in prometheus["command"] if f.startswith("--config.file="))
    [config] = [m for m in mounts(prometheus) if m.target == config_flag.split("=", 1)[1]]
    assert (ROOT / config.source).resolve() == PROMETHEUS and config.read_only
    jobs = {job["job_name"]: job for job in yaml.safe_load(PROMETHEUS.read_text())
            ["scrape_configs"]}
    assert set(jobs) == {"web", "worker", "serving"}

    web = jobs["web"]
    [target] = web["static_configs"][0]["targets"]
    host, port = target.split(":")
    assert host == "web" and [port] == services["web"]["expose"]
    assert environment(services["web"])["WEB_BIND"].endswith(f":{port}")
    assert web["metrics_path"] in {rule.rule for rule in app.url_map.iter_rules()}
    # Its bearer token is the very secret the site reads METRICS_TOKEN from.
    token = PurePosixPath(web["authorization"]["credentials_file"])
    assert token.parent == PurePosixPath("/run/secrets") and token.name in prometheus["secrets"]
    assert environment(services["web"])["METRICS_TOKEN_FILE"] == str(token)
    assert token.name in services["web"]["secrets"]

    [workers] = jobs["worker"]["dns_sd_configs"]
    assert workers["names"] == ["worker"] and workers["type"] == "A"
    assert str(workers["port"]) == environment(services["worker"])["WORKER_METRICS_PORT"]
    assert [str(workers["port"])] == services["worker"]["expose"]

    serving = jobs["serving"]
    [target] = serving["static_configs"][0]["targets"]
    host, port = target.split(":")
    assert host == "serving" and f"--rest_api_port={port}" in services["serving"]["command"]
    monitoring = (ROOT / "serving" / "monitoring.config").read_text()
    assert f'path: "{serving["metrics_path"]}"' in monitoring
    for job in jobs.values():
        for static in job.get("static_configs", []):
            for found in static["targets"]:
                assert found.split(":")[0] in services, f"{job['job_name']}: {found}"
