"""Wiring one server session: settings layers, install id, experiment arm, backend, telemetry store, metrics.

``opportune.server.lsp`` calls ``start_session`` on ``initialize`` and ``Session.close`` on shutdown; the CLI's
``complete`` and ``demo`` commands use the same function, so every entry point runs the same engine.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from opportune.server.backends.base import Backend, BackendError
from opportune.server.completion import Effective, Engine
from opportune.server.config import ArmSettings, Settings, as_dict, find_config, load_toml, resolve, with_arm
from opportune.telemetry import events as ev
from opportune.telemetry.assignment import assign_arm, settings_digest
from opportune.telemetry.store import EventStore, NullStore, default_db_path

log = logging.getLogger(__name__)


def make_backend(settings: Settings) -> Backend:
    """The backend a settings object names; raises BackendError with a message for the user."""
    m = settings.model
    if m.backend == "fake":
        from opportune.server.backends.fake import FakeBackend

        return FakeBackend(token_latency_ms=m.fake_latency_ms)
    if m.backend in ("openai", "llama-server"):
        from opportune.server.backends.http import HttpBackend

        return HttpBackend(m)
    from opportune.server.backends.llama import LlamaBackend
    from opportune.server.models import resolve_model_path

    return LlamaBackend(resolve_model_path(m.path), n_ctx=m.n_ctx, threads=m.threads)


def install_id(configured: str) -> str:
    """A random id per installation, kept in the state directory: the unit of experiment assignment."""
    if configured:
        return configured
    path = Path(platformdirs.user_state_dir("opportune")) / "install_id"
    try:
        existing = path.read_text().strip()
        if existing:
            return existing
    except OSError:
        pass
    new = uuid.uuid4().hex
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(new)
    except OSError:
        log.warning("cannot keep the install id in %s; experiments will see a new install each start", path)
    return new


Layers = tuple[Mapping[str, Any], Mapping[str, Any], Mapping[str, Any]]  # toml, init options, CLI


@dataclass
class Session:
    engine: Engine
    store: Any
    install: str
    problems: list[str] = field(default_factory=list)
    metrics_server: Any = None
    layers: Layers = ({}, {}, {})

    @property
    def config(self) -> Effective:
        """The configuration in force: the engine holds it, and only the engine."""
        return self.engine.config

    @property
    def settings(self) -> Settings:
        return self.engine.config.settings

    def apply_client_settings(self, client_settings: Mapping[str, Any]) -> list[str]:
        """The client sent its complete current set (workspace/didChangeConfiguration): the configuration is
        resolved again from the start-up layers plus this one (a setting the user removed goes back to its
        default) and swapped whole; returns the problems found."""
        toml, init, overrides = self.layers
        settings, problems = resolve(toml, init, client_settings, overrides)
        config, arm_problems = settle(settings, self.install)
        self.engine.reconfigure(config)
        return problems + arm_problems

    def set_enabled(self, enabled: bool) -> None:
        """Completions on or off (opportune/setEnabled), until the next configuration change."""
        settings, _ = resolve({"completion": {"enabled": enabled}}, base=self.settings)
        self.engine.reconfigure(effective(settings, self.config.arm))

    def close(self) -> None:
        self.engine.shutdown()
        self.store.close()
        if self.metrics_server is not None:
            try:
                self.metrics_server.close()
            except Exception:
                log.exception("stopping the metrics endpoint failed")


def effective_settings(
    init_options: Mapping[str, Any] | None,
    overrides: Mapping[str, Any] | None = None,
    config_path: Path | None = None,
    workspace: Path | None = None,
) -> tuple[Settings, list[str]]:
    settings, problems, _ = _layered(init_options, overrides, config_path, workspace)
    return settings, problems


def _layered(
    init_options: Mapping[str, Any] | None,
    overrides: Mapping[str, Any] | None,
    config_path: Path | None,
    workspace: Path | None,
) -> tuple[Settings, list[str], tuple[Mapping[str, Any], Mapping[str, Any], Mapping[str, Any]]]:
    problems: list[str] = []
    path = config_path or find_config(workspace)
    toml = load_toml(path, problems) if path is not None else {}
    layers = (toml, dict(init_options or {}), dict(overrides or {}))
    # A bad key is reported and skipped; the others still apply.
    settings, errors = resolve(*layers)
    return settings, problems + errors, layers


def effective(settings: Settings, arm: str) -> Effective:
    """The configuration value for settings already armed: its digest is computed from them."""
    digest = settings_digest({"completion": as_dict(settings.completion), "model": as_dict(settings.model)})
    return Effective(settings, arm, digest)


def settle(settings: Settings, install: str) -> tuple[Effective, list[str]]:
    """Layered settings to the configuration in force: the install's experiment arm applied, its digest."""
    armed, arm, problems = choose_arm(settings, install)
    return effective(armed, arm), problems


def choose_arm(settings: Settings, install: str) -> tuple[Settings, str, list[str]]:
    exp = settings.experiment
    if not exp.name or not exp.arms:
        return settings, "", []
    name = assign_arm(exp.name, install, [(a.name, a.weight) for a in exp.arms])
    arm: ArmSettings = next(a for a in exp.arms if a.name == name)
    armed, errors = with_arm(settings, arm)
    return armed, name, [f"experiment arm {name}: {e}" for e in errors]


def start_session(
    init_options: Mapping[str, Any] | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    config_path: Path | None = None,
    workspace: Path | None = None,
    notify_user: Callable[[str], None] | None = None,
    backend_factory: Callable[[Settings], Backend] | None = None,
    store: Any = None,
) -> Session:
    settings, problems, layers = _layered(init_options, overrides, config_path, workspace)
    install = install_id(settings.telemetry.install_id)
    config, arm_problems = settle(settings, install)
    problems += arm_problems
    t = config.settings.telemetry
    if store is None:
        if t.enabled:
            try:
                store = EventStore(
                    Path(t.db).expanduser() if t.db else default_db_path(),
                    flush_interval_s=t.flush_interval_s,
                    store_text=t.store_text,
                )
            except Exception as e:
                problems.append(f"telemetry store unavailable ({e}); events are not recorded")
                store = NullStore()
        else:
            store = NullStore()
    metrics = None
    metrics_server = None
    if t.metrics_port:
        try:
            from opportune.telemetry.metrics import Metrics

            metrics = Metrics()
            metrics_server = metrics.serve(host=t.metrics_host, port=t.metrics_port)
        except Exception as e:
            problems.append(f"metrics endpoint on {t.metrics_host}:{t.metrics_port} unavailable ({e})")
            metrics = None

    def record(event: ev.Event) -> None:
        store.record(event)
        if metrics is not None:
            metrics.observe(event)

    engine = Engine(
        backend_factory or make_backend, config, record=record, install_id=install, notify_user=notify_user
    )
    return Session(engine, store, install, problems, metrics_server, layers)


__all__ = [
    "BackendError",
    "Session",
    "choose_arm",
    "effective",
    "effective_settings",
    "make_backend",
    "settle",
    "start_session",
]
