"""The Prometheus rules and the Grafana dashboard in mlops/: promtool accepts the rules and
their unit tests pass, every metric they read is one the service exports, and the dashboard
is importable anywhere (a datasource variable, unique panel ids, a query in every panel)."""

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from sentinel_dagster.core.paths import drift_summary_path
from serving.app import create_app
from serving.registry import Registry
from serving.settings import ServiceSettings
from tests.serving.bundles import SEED_REQUEST, publish_small

MLOPS = Path(__file__).resolve().parents[2] / "mlops"
RULES = MLOPS / "prometheus" / "alerts.yml"
RULE_TESTS = MLOPS / "prometheus" / "alerts_test.yml"
DASHBOARD = MLOPS / "grafana" / "sentinel-scoring.json"
RUNBOOK = MLOPS / "README.md"

# Series Prometheus makes itself for every target, not read from /metrics.
PROMETHEUS_OWN = {"up"}
# PromQL words that look like metric names.
KEYWORDS = {"and", "or", "unless", "bool", "offset", "group_left", "group_right", "inf", "nan"}
# A family's series, by its `# TYPE` (prometheus_client writes counters' TYPE with `_total`).
SERIES_SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("", "_sum", "_count")}


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: run `make setup` (it installs Debian's `prometheus`)")
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (recorded names included)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings: label values, le="0.02"
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for match in re.finditer(r"(?<![\w:.$])([a-zA-Z_:][\w:]*)\s*(\(?)", expr):
        name, call = match.groups()
        if not call and name not in KEYWORDS:
            names.add(name)
    return names


def rules() -> list[dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def alerts() -> list[dict]:
    return [rule for rule in rules() if "alert" in rule]


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def all_panels(panels: list[dict]) -> Iterator[dict]:
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))  # a collapsed row holds its panels


def dashboard_queries() -> list[str]:
    board = dashboard()
    queries = [t["expr"] for p in all_panels(board["panels"]) for t in p.get("targets", [])]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":  # label_values(<selector>, <label>)
            selector = re.fullmatch(r"label_values\((.*),\s*\w+\)", variable["query"]["query"])
            assert selector, variable["query"]
            queries.append(selector.group(1))
    return queries


def github_anchor(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


# --- the rules


def test_promtool_accepts_the_rules(promtool: str) -> None:
    result = run(promtool, "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


def test_the_rules_unit_tests_pass(promtool: str) -> None:
    result = run(promtool, "test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_tested_firing_and_quiet() -> None:
    """Each alert has a test time where it fires, and one where a job of the test's series is
    expected not to (every alert of the name must be listed, so an absent job is silent)."""
    fires: set[str] = set()
    quiet: set[str] = set()
    for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        jobs = {m for s in test["input_series"] for m in re.findall(r'job="([^"]+)"', s["series"])}
        for case in test.get("alert_rule_test", []):
            expected = case.get("exp_alerts") or []
            if expected:
                fires.add(case["alertname"])
            if jobs - {alert["exp_labels"]["job"] for alert in expected}:
                quiet.add(case["alertname"])
    names = {alert["alert"] for alert in alerts()}
    assert names - fires == set(), "alerts never tested firing"
    assert names - quiet == set(), "alerts never tested quiet"


def test_every_alert_has_a_severity_and_its_runbook_section() -> None:
    anchors = {
        github_anchor(line.lstrip("#"))
        for line in RUNBOOK.read_text().splitlines()
        if line.startswith("#")
    }
    for alert in alerts():
        name = alert["alert"]
        assert alert["labels"]["severity"] in {"critical", "warning"}, name
        annotations = alert["annotations"]
        assert annotations["summary"] and annotations["description"], name
        assert annotations["runbook_url"] == f"mlops/README.md#{name.lower()}", name
        assert name.lower() in anchors, f"mlops/README.md has no section {name}"


# --- metric names against a real scrape


def test_metric_names_are_read_from_the_queries() -> None:
    expr = (
        'sum by (job, le) (rate(a_seconds_bucket{le="0.02",route=~"/v1/x|y"}[5m])) '
        "/ ignoring (reason) group_left b_total offset 1h > 0.5 * 1e3 "
        'and on (job) c:recorded:rate5m unless time() - d_timestamp_seconds{job="$job"}'
    )
    assert metric_names(expr) == {"a_seconds_bucket", "b_total", "c:recorded:rate5m",
                                  "d_timestamp_seconds"}  # fmt: skip


@pytest.fixture(scope="module")
def exported_series(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Every series name a scrape of the service can hold, from its `# TYPE` lines: a family
    is listed even before its first sample (a labelled counter before its first event)."""
    home = tmp_path_factory.mktemp("service")
    registry = Registry(home / "registry")
    publish_small(registry, seed=1)
    publish_small(registry, seed=2, minute=1)  # a challenger: its breaker's metrics
    # The drift gauges are exported once the drift watch has written its summary.
    summary = {"generated_at": 1_790_000_000.0, "drifted": False, "feature_psi": {"amount": 0.01},
               "score_psi": 0.02, "decline_rate_change": 0.001}  # fmt: skip
    drift_summary_path(home).parent.mkdir(parents=True)
    drift_summary_path(home).write_text(json.dumps(summary))
    raw_event = {"transaction_id": "t1", "card_id": "c1", "merchant_id": "m1", "amount": 20.0,
                 "event_time": "2026-01-01T12:00:00Z"}  # fmt: skip
    with TestClient(create_app(ServiceSettings(home=home))) as client:
        for event in (SEED_REQUEST, raw_event):  # so that the counters have samples too
            assert client.post("/v1/score", json=event).status_code == 200
        text = client.get("/metrics").text
    series = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            series.update(name + suffix for suffix in SERIES_SUFFIXES.get(kind, ("",)))
    return series


def test_the_scrape_lists_histograms_and_counters_by_their_series(
    exported_series: set[str],
) -> None:
    assert "sentinel_request_duration_seconds_bucket" in exported_series
    assert "sentinel_request_duration_seconds_count" in exported_series
    assert "sentinel_request_duration_seconds" not in exported_series  # no such series
    assert "sentinel_requests_total" in exported_series
    assert "sentinel_requests" not in exported_series


def test_every_metric_the_rules_and_dashboard_read_is_exported(
    exported_series: set[str],
) -> None:
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    read_by_rules = set().union(*(metric_names(rule["expr"]) for rule in rules()))
    read_by_dashboard = set().union(*map(metric_names, dashboard_queries()))
    assert {"sentinel_request_duration_seconds_bucket", "sentinel_decisions_total",
            "sentinel_breaker_state"} <= read_by_rules  # fmt: skip
    assert len(read_by_dashboard) >= 30

    read = read_by_rules | read_by_dashboard
    assert {name for name in read if ":" in name} - recorded == set(), "not recorded by alerts.yml"
    missing = sorted(read - recorded - PROMETHEUS_OWN - exported_series)
    assert missing == [], f"not in the service's /metrics: {missing}"


# --- the dashboard


def test_the_dashboard_is_importable_into_any_grafana() -> None:
    board = dashboard()
    assert isinstance(board["schemaVersion"], int)
    assert board["uid"] and board["title"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"

    panels = list(all_panels(board["panels"]))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":  # a heading: rows hold no query
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        targets = panel["targets"]
        assert targets, f"{panel['title']} has no query"
        assert len({t["refId"] for t in targets}) == len(targets), panel["title"]
        for target in targets:
            assert target["expr"].strip(), panel["title"]
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


def test_no_datasource_uid_is_hard_coded() -> None:
    """Only the datasource variable (and Grafana's built-in annotations) name a datasource."""

    def uids(node: object) -> Iterator[str]:
        if isinstance(node, dict):
            if isinstance(node.get("datasource"), dict):
                yield node["datasource"]["uid"]
            for value in node.values():
                yield from uids(value)
        elif isinstance(node, list):
            for value in node:
                yield from uids(value)

    assert set(uids(dashboard())) == {"${datasource}", "-- Grafana --"}
