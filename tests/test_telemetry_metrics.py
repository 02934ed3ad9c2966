"""Prometheus metrics: own registry, the server's calls and events, scraped over real HTTP."""

from __future__ import annotations

import logging
import urllib.request
from typing import Any

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

import opportune.telemetry.metrics as metrics_module
from opportune.telemetry.events import Attempt, Common, Opportunity, Outcome, Response, Shown
from opportune.telemetry.metrics import Metrics, is_loopback


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, keyed by (sample name, sorted labels)."""
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200
        body = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def labels(**kw: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(kw.items()))


def test_scraped_over_http() -> None:
    m = Metrics()
    for _ in range(3):
        m.opportunity("A", "python")
    m.opportunity("B", "go")
    m.attempt("A", "python")
    m.attempt("A", "python")
    m.shown("A", "python")
    m.accepted("A", "python", 12)
    m.loss("A", "python", "deadline")
    m.loss("A", "python", "deadline")
    m.loss("B", "go", "error")
    m.latency("A", "python", 0.12)
    m.latency("A", "python", 0.6)
    m.stage("A", "python", "prompt", 0.004)
    with m.serve(port=0) as server:
        assert server.host == "127.0.0.1" and server.port > 0
        samples = scrape(server.url)
    py = labels(arm="A", language="python")
    assert samples[("opportune_opportunities_total", py)] == 3
    assert samples[("opportune_opportunities_total", labels(arm="B", language="go"))] == 1
    assert samples[("opportune_attempts_total", py)] == 2
    assert samples[("opportune_shown_total", py)] == 1
    assert samples[("opportune_accepted_total", py)] == 1
    assert samples[("opportune_accepted_chars_total", py)] == 12
    assert samples[("opportune_losses_total", labels(arm="A", language="python", reason="deadline"))] == 2
    assert samples[("opportune_losses_total", labels(arm="B", language="go", reason="error"))] == 1
    assert samples[("opportune_latency_seconds_count", py)] == 2
    assert samples[("opportune_latency_seconds_sum", py)] == pytest.approx(0.72)
    assert samples[("opportune_latency_seconds_bucket", labels(arm="A", language="python", le="0.15"))] == 1
    assert samples[("opportune_latency_seconds_bucket", labels(arm="A", language="python", le="1.0"))] == 2
    stage = labels(arm="A", language="python", stage="prompt")
    assert samples[("opportune_stage_seconds_count", stage)] == 1


def test_server_close_frees_the_port() -> None:
    m = Metrics()
    server = m.serve(port=0)
    url = server.url
    scrape(url)
    server.close()
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=2)


def test_own_registry_never_the_global_one() -> None:
    a, b = Metrics(), Metrics()  # two on the global registry would raise "Duplicated timeseries"
    a.opportunity("A", "python")
    assert (
        b.registry.get_sample_value("opportune_opportunities_total", {"arm": "A", "language": "python"})
        is None
    )
    assert (
        REGISTRY.get_sample_value("opportune_opportunities_total", {"arm": "A", "language": "python"}) is None
    )


def test_observe_maps_events_and_counts_completions_once() -> None:
    m = Metrics()
    c = Common("i", "s", arm="A", language="rust")
    events: list[Any] = [
        Opportunity(c, opportunity_id="o1", document_hash="h", edit_kind="insert"),
        Attempt(c, attempt_id="a1", opportunity_id="o1", source="model"),
        Response(
            c,
            attempt_id="a1",
            latency_first_ms=20.0,
            latency_total_ms=80.0,
            generated_tokens=3,
            stop_reason="eol",
            chars=9,
            lines=1,
            completion_id="c1",
            stages_ms='{"prompt": 4, "model": 70}',
        ),
        Response(
            c,
            attempt_id="a2",
            latency_first_ms=None,
            latency_total_ms=900.0,
            generated_tokens=0,
            stop_reason="",
            chars=0,
            lines=0,
            loss_reason="deadline",
        ),
        Shown(c, completion_id="c1", attempt_id="a1"),
        Shown(c, completion_id="c1", attempt_id="a1", inferred=True),  # the same completion again
        Outcome(c, completion_id="c1", outcome="partial", accepted_chars=5, accepted_tokens=2),
        Outcome(
            c, completion_id="c1", outcome="accepted", accepted_chars=9, accepted_tokens=3, inferred=True
        ),
        Outcome(c, completion_id="c2", outcome="rejected"),
    ]
    for event in events:
        m.observe(event)
    value = m.registry.get_sample_value
    lab = {"arm": "A", "language": "rust"}
    assert value("opportune_opportunities_total", lab) == 1
    assert value("opportune_attempts_total", lab) == 1
    assert value("opportune_shown_total", lab) == 1
    assert value("opportune_accepted_total", lab) == 1
    assert value("opportune_accepted_chars_total", lab) == 5
    assert value("opportune_losses_total", {**lab, "reason": "deadline"}) == 1
    assert value("opportune_latency_seconds_count", lab) == 1  # only the returned suggestion
    assert value("opportune_latency_seconds_sum", lab) == pytest.approx(0.08)
    assert value("opportune_stage_seconds_sum", {**lab, "stage": "model"}) == pytest.approx(0.07)


def test_is_loopback() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0")
    assert not is_loopback("192.168.1.20")
    assert not is_loopback("metrics.example")


def test_loud_warning_when_not_on_loopback(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    started: dict[str, Any] = {}

    class FakeServer:
        server_port = 9999

        def shutdown(self) -> None:
            started["shutdown"] = True

        def server_close(self) -> None:
            pass

        def serve_forever(self) -> None:
            pass

    def fake_make_server(addr: str, port: int, app: Any, *_a: Any, **_k: Any) -> FakeServer:
        # Never bind a public interface in a test; check what would have been served.
        started.update(port=port, addr=addr, app=app)
        return FakeServer()

    monkeypatch.setattr(metrics_module, "make_server", fake_make_server)
    m = Metrics()
    with caplog.at_level(logging.WARNING, logger="opportune.telemetry.metrics"):
        server = m.serve(host="0.0.0.0", port=9999)
    assert started["addr"] == "0.0.0.0" and started["port"] == 9999
    assert any("NOT ON LOOPBACK" in r.message for r in caplog.records)
    server.close()
    assert started["shutdown"]

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="opportune.telemetry.metrics"):
        m.serve(host="127.0.0.1", port=9999).close()
    assert not caplog.records


def test_metrics_on_loopback_refuse_a_foreign_host_header() -> None:
    """DNS rebinding: a page on evil.example that resolves its name to 127.0.0.1 could read the metrics;
    the endpoint answered any Host header."""
    import http.client

    m = Metrics()
    m.opportunity("A", "python")
    with m.serve(port=0) as server:
        for host, status in (
            ("evil.example", 403),
            (f"evil.example:{server.port}", 403),
            (f"127.0.0.1:{server.port}", 200),
            (f"localhost:{server.port}", 200),
        ):
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
            conn.request("GET", "/metrics", headers={"Host": host})
            response = conn.getresponse()
            body = response.read()
            conn.close()
            assert response.status == status, (host, response.status)
            assert (b"opportune_opportunities_total" in body) == (status == 200)
