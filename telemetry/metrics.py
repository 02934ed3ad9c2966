"""Prometheus metrics of the running server, on their own registry, served on 127.0.0.1 when enabled.

Every series is labelled by ``arm`` and ``language``:

    opportune_opportunities_total            opportunities (human edits at the cursor)
    opportune_attempts_total                 attempts to produce a suggestion
    opportune_shown_total                    suggestions shown
    opportune_accepted_total                 suggestions accepted, fully or partly
    opportune_accepted_chars_total           accepted characters (the numerator of CPO)
    opportune_losses_total{reason}           attempts that showed nothing, by reason
    opportune_latency_seconds                histogram: total latency of returned suggestions
    opportune_stage_seconds{stage}           histogram: time per pipeline stage
    opportune_keystrokes_saved_total         characters not typed minus keys spent accepting
    opportune_persistence_checkpoints_total{checkpoint,status}  checkpoints measured or unknown
    opportune_persistence_accepted_chars_total{checkpoint}      accepted characters measured at a checkpoint
    opportune_persistence_kept_chars_total{checkpoint}          of those, still there

Persistence at a checkpoint is kept / accepted chars (e.g. ``rate(..._kept_chars_total{checkpoint="600"}[1d])
/ rate(..._accepted_chars_total{checkpoint="600"}[1d])``); persisted CPO is CPO times it.
    opportune_edit_opportunities_total       edits with follow-ups (the denominator of edit CPO)
    opportune_next_edits_shown_total         next edits offered to the client
    opportune_next_edits_total{outcome}      next edits accepted or rejected
    opportune_next_edit_chars_total          characters changed by accepted next edits (edit CPO's numerator)

The live counters are for dashboards and alerts; the store (``opportune.telemetry.store``) is the record the
reports and experiments use.  ``Metrics.observe(event)`` updates them from the same events the store
gets, counting a completion's first "shown" and first acceptance once.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Histogram, make_wsgi_app

from opportune.telemetry.events import (
    Attempt,
    EditOpportunity,
    Event,
    NextEdit,
    NextEditOutcome,
    Opportunity,
    Outcome,
    Persistence,
    Response,
    Shown,
)
from opportune.telemetry.schema import parse_stages

logger = logging.getLogger(__name__)

LATENCY_BUCKETS_S = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
STAGE_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_LABELS = ("arm", "language")
_RECENT_IDS = 4096  # completion ids remembered to count shown/accepted once


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost: assume it is reachable from outside


def host_header_is_loopback(header: str) -> bool:
    """Whether an HTTP Host header names a loopback address (with or without a port)."""
    host = header.strip()
    if host.startswith("["):
        name = host[1:].split("]", 1)[0]
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return is_loopback(name)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass  # a scrape every few seconds is not news


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _ThreadingWSGIServer6(_ThreadingWSGIServer):
    address_family = socket.AF_INET6


def _loopback_only(app: Any) -> Any:
    """Answer only requests addressed to loopback: a web page the user visits could otherwise read the
    metrics through DNS rebinding (a name of its own that resolves to 127.0.0.1)."""

    def guarded(environ: dict[str, Any], start_response: Any) -> Any:
        if not host_header_is_loopback(str(environ.get("HTTP_HOST", ""))):
            start_response("403 Forbidden", [("Content-Type", "text/plain")])
            return [b"the metrics answer only requests addressed to 127.0.0.1 or localhost\n"]
        return app(environ, start_response)

    return guarded


@dataclass
class MetricsServer:
    """The HTTP exposition server; ``close()`` stops it and frees the port."""

    host: str
    port: int
    _server: object = field(repr=False)
    _thread: threading.Thread = field(repr=False)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        server = self._server
        server.shutdown()  # type: ignore[attr-defined]
        server.server_close()  # type: ignore[attr-defined]
        self._thread.join(timeout=5)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Metrics:
    """The collectors, on a registry of their own (never prometheus_client's global one)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.opportunities = Counter(
            "opportune_opportunities", "Human edits at the cursor", _LABELS, registry=r
        )
        self.attempts = Counter("opportune_attempts", "Attempts to produce a suggestion", _LABELS, registry=r)
        self.shown_total = Counter("opportune_shown", "Suggestions shown", _LABELS, registry=r)
        self.accepted_total = Counter(
            "opportune_accepted", "Suggestions accepted (fully or partly)", _LABELS, registry=r
        )
        self.accepted_chars = Counter("opportune_accepted_chars", "Accepted characters", _LABELS, registry=r)
        self.losses = Counter(
            "opportune_losses", "Attempts that showed nothing, by reason", (*_LABELS, "reason"), registry=r
        )
        self.latency_seconds = Histogram(
            "opportune_latency_seconds",
            "Total latency of returned suggestions",
            _LABELS,
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.stage_seconds = Histogram(
            "opportune_stage_seconds",
            "Time per pipeline stage",
            (*_LABELS, "stage"),
            buckets=STAGE_BUCKETS_S,
            registry=r,
        )
        self.keystrokes_saved = Counter(
            "opportune_keystrokes_saved",
            "Characters not typed minus keys spent accepting",
            _LABELS,
            registry=r,
        )
        self.persistence_checkpoints = Counter(
            "opportune_persistence_checkpoints",
            "Persistence checkpoints of accepted suggestions, measured or unknown",
            (*_LABELS, "checkpoint", "status"),
            registry=r,
        )
        self.persistence_accepted_chars = Counter(
            "opportune_persistence_accepted_chars",
            "Accepted characters measured at a persistence checkpoint",
            (*_LABELS, "checkpoint"),
            registry=r,
        )
        self.persistence_kept_chars = Counter(
            "opportune_persistence_kept_chars",
            "Accepted characters still there at a persistence checkpoint",
            (*_LABELS, "checkpoint"),
            registry=r,
        )
        self.edit_opportunities = Counter(
            "opportune_edit_opportunities", "Edits with follow-up edits", _LABELS, registry=r
        )
        self.next_edits_shown = Counter(
            "opportune_next_edits_shown", "Next edits offered to the client", _LABELS, registry=r
        )
        self.next_edits = Counter(
            "opportune_next_edits", "Next edits accepted or rejected", (*_LABELS, "outcome"), registry=r
        )
        self.next_edit_chars = Counter(
            "opportune_next_edit_chars", "Characters changed by accepted next edits", _LABELS, registry=r
        )
        self._lock = threading.Lock()
        self._shown_ids: OrderedDict[str, None] = OrderedDict()
        self._accepted_ids: OrderedDict[str, None] = OrderedDict()

    # --- what the server calls ---

    def opportunity(self, arm: str, language: str) -> None:
        self.opportunities.labels(arm, language).inc()

    def attempt(self, arm: str, language: str) -> None:
        self.attempts.labels(arm, language).inc()

    def shown(self, arm: str, language: str) -> None:
        self.shown_total.labels(arm, language).inc()

    def accepted(self, arm: str, language: str, chars: int) -> None:
        self.accepted_total.labels(arm, language).inc()
        self.accepted_chars.labels(arm, language).inc(max(0, chars))

    def loss(self, arm: str, language: str, reason: str) -> None:
        self.losses.labels(arm, language, reason).inc()

    def latency(self, arm: str, language: str, seconds: float) -> None:
        self.latency_seconds.labels(arm, language).observe(seconds)

    def stage(self, arm: str, language: str, stage: str, seconds: float) -> None:
        self.stage_seconds.labels(arm, language, stage).observe(seconds)

    def observe(self, event: Event) -> None:
        """Update the collectors from one telemetry event (the same one given to the store)."""
        arm, language = event.common.arm, event.common.language
        if isinstance(event, Opportunity):
            self.opportunity(arm, language)
        elif isinstance(event, Attempt):
            self.attempt(arm, language)
        elif isinstance(event, Response):
            if event.loss_reason is None:
                self.latency(arm, language, event.latency_total_ms / 1000)
            else:
                self.loss(arm, language, event.loss_reason)
            for stage, ms in parse_stages(event.stages_ms).items():
                self.stage(arm, language, stage, ms / 1000)
        elif isinstance(event, Shown):
            if self._first(self._shown_ids, event.completion_id):
                self.shown(arm, language)
        elif (
            isinstance(event, Outcome)
            and event.outcome in ("accepted", "partial")
            and self._first(self._accepted_ids, event.completion_id)
        ):
            self.accepted(arm, language, event.accepted_chars)
            self.keystrokes_saved.labels(arm, language).inc(max(0, event.keystrokes_saved))
        elif isinstance(event, Persistence) and event.status != "tracking":
            checkpoint = f"{event.checkpoint_s:g}"
            self.persistence_checkpoints.labels(arm, language, checkpoint, event.status).inc()
            if event.status == "measured":
                self.persistence_accepted_chars.labels(arm, language, checkpoint).inc(event.accepted_chars)
                self.persistence_kept_chars.labels(arm, language, checkpoint).inc(event.kept_chars)
        elif isinstance(event, EditOpportunity):
            self.edit_opportunities.labels(arm, language).inc()
        elif isinstance(event, NextEdit):
            self.next_edits_shown.labels(arm, language).inc()
        elif isinstance(event, NextEditOutcome):
            self.next_edits.labels(arm, language, event.outcome).inc()
            if event.outcome == "accepted":
                self.next_edit_chars.labels(arm, language).inc(max(0, event.chars_changed))

    def serve(self, port: int, host: str = "127.0.0.1") -> MetricsServer:
        """Serve ``/metrics`` over HTTP on host:port (port 0: any free port) in a daemon thread."""
        if not is_loopback(host):
            logger.warning(
                "PROMETHEUS METRICS ARE EXPOSED ON %s:%d, NOT ON LOOPBACK: anyone who can reach this address "
                "can read them (arm names, languages, counts). Use 127.0.0.1 unless you mean it.",
                host,
                port,
            )
        app = make_wsgi_app(self.registry)
        if is_loopback(host):
            app = _loopback_only(app)
        server_class = _ThreadingWSGIServer6 if ":" in host else _ThreadingWSGIServer
        server = make_server(host, port, app, server_class, handler_class=_QuietHandler)
        thread = threading.Thread(target=server.serve_forever, name="opportune-metrics", daemon=True)
        thread.start()
        return MetricsServer(host=host, port=int(server.server_port), _server=server, _thread=thread)

    def _first(self, seen: OrderedDict[str, None], completion_id: str) -> bool:
        """True the first time a completion id is seen (among the last few thousand)."""
        with self._lock:
            if completion_id in seen:
                return False
            seen[completion_id] = None
            if len(seen) > _RECENT_IDS:
                seen.popitem(last=False)
            return True
