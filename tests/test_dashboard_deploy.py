"""deploy/: the Prometheus scrape config and the Grafana dashboard use the series the server really exposes.

The exposition is produced by the real collectors (``opportune.telemetry.metrics.Metrics``) fed one event of each
kind and scraped over HTTP, so a renamed metric or label fails here rather than in someone's Grafana.
"""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from opportune.telemetry.events import Attempt, Common, Opportunity, Outcome, Persistence, Response, Shown
from opportune.telemetry.metrics import Metrics

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
SERIES = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})? ", re.M)
PROMQL_NAMES = re.compile(r"\b(opportune_[a-z_]+)\b")
BY_LABELS = re.compile(r"\bby \(([^)]*)\)")
SELECTOR_LABELS = re.compile(r"\b(opportune_[a-z_]+)\{([^}]*)\}")


@pytest.fixture(scope="module")
def exposed() -> dict[str, set[str]]:
    """Series name -> label names, scraped from a live metrics endpoint fed one event of each kind."""
    metrics = Metrics()
    c = Common(install_id="i", session_id="s", arm="A", language="python")
    for event in (
        Opportunity(c, opportunity_id="o", document_hash="d", edit_kind="insert"),
        Attempt(c, attempt_id="a", opportunity_id="o", source="model"),
        Response(
            c,
            attempt_id="a",
            latency_first_ms=40.0,
            latency_total_ms=120.0,
            generated_tokens=4,
            stop_reason="eol",
            chars=12,
            lines=1,
            stages_ms='{"prefill": 30.0}',
            completion_id="c",
        ),
        Response(
            c,
            attempt_id="b",
            latency_first_ms=None,
            latency_total_ms=300.0,
            generated_tokens=0,
            stop_reason="",
            chars=0,
            lines=0,
            loss_reason="deadline",
        ),
        Shown(c, completion_id="c", attempt_id="a"),
        Outcome(
            c,
            completion_id="c",
            outcome="accepted",
            accepted_chars=12,
            accepted_tokens=4,
            keystrokes_saved=11,
        ),
        Persistence(
            c, completion_id="c", status="measured", checkpoint_s=30.0, accepted_chars=12, kept_chars=12
        ),
    ):
        metrics.observe(event)
    with metrics.serve(port=0) as server, urllib.request.urlopen(server.url, timeout=30) as response:
        text = response.read().decode()
    series: dict[str, set[str]] = {}
    for name, labels in SERIES.findall(text):
        found = series.setdefault(name, set())
        found.update(part.split("=", 1)[0] for part in labels.split(",") if part)
    return series


def grafana() -> dict[str, Any]:
    return json.loads((DEPLOY / "grafana-opportune.json").read_text(encoding="utf-8"))


def expressions(dashboard: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    return exprs


def test_grafana_queries_use_exposed_series_and_labels(exposed: dict[str, set[str]]) -> None:
    dashboard = grafana()
    exprs = expressions(dashboard)
    assert len(dashboard["panels"]) >= 8
    used: set[str] = set()
    for expr in exprs:
        names = PROMQL_NAMES.findall(expr)
        assert names, expr
        for name in names:
            assert name in exposed, f"{name} is not exposed by telemetry/metrics.py"
            used.add(name)
        for name, selector in SELECTOR_LABELS.findall(expr):
            for label in re.findall(r"([a-z_]+)\s*=~?", selector):
                assert label in exposed[name], f"{name} has no label {label}"
        for group in BY_LABELS.findall(expr):
            for label in (part.strip() for part in group.split(",")):
                assert any(label in exposed[n] for n in names), f"no series in {expr!r} has label {label}"
    # Every counter and histogram of the server appears somewhere on the dashboard.
    families = {re.sub(r"_(bucket|count|sum|created)$", "", n) for n in exposed if n.startswith("opportune_")}
    for family in families:
        assert any(n.startswith(family) for n in used), f"{family} is on no panel"


def test_grafana_dashboard_is_importable() -> None:
    dashboard = grafana()
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 30
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert (
        variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    )
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}"
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"]) and panel["gridPos"]["x"] + panel["gridPos"][
            "w"
        ] <= 24
        for target in panel["targets"]:
            assert (
                "$arm" in target["expr"] and "$language" in target["expr"]
            )  # the variables filter everything
            assert target["expr"].count("(") == target["expr"].count(")")


def test_prometheus_config_scrapes_the_documented_port() -> None:
    yaml = pytest.importorskip("yaml")
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text(encoding="utf-8"))
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "opportune"]
    assert job["metrics_path"] == "/metrics"
    (target,) = job["static_configs"][0]["targets"]
    host, port = target.rsplit(":", 1)
    assert host == "127.0.0.1"  # the server's metrics endpoint is loopback-only by default
    readme = (DEPLOY / "README.md").read_text(encoding="utf-8")
    assert f"metrics_port = {port}" in readme and f"--metrics-port {port}" in readme
    for name in ("prometheus.yml", "grafana-opportune.json"):
        assert f"]({name})" in readme
