"""Wiring one server session: settings layers, install id, experiment arm, backend, telemetry store, metrics.

``opportune.server.lsp`` calls ``start_session`` on ``initialize`` and ``Session.close`` on shutdown; the CLI's
``complete`` and ``demo`` commands use the same function, so every entry point runs the same engine.
"""

from __future__ import annotations

import logging
import os
import secrets
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from opportune.server import trust
from opportune.server.backends.base import Backend, BackendError
from opportune.server.completion import Effective, Engine
from opportune.server.config import (
    ArmSettings,
    Settings,
    as_dict,
    find_config,
    load_toml,
    read_toml,
    resolve,
    with_arm,
)
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


def hash_salt() -> str:
    """The install's secret salt for hashes in telemetry (document_hash), kept in the state directory with
    owner-only permissions and never written into a store or an export: a guessed path cannot be confirmed
    from a store alone.  Without a writable state directory, a salt for this process only."""
    path = Path(platformdirs.user_state_dir("opportune")) / "hash_salt"
    try:
        existing = path.read_text().strip()
        if len(existing) >= 32:
            return existing
    except OSError:
        pass
    new = secrets.token_hex(32)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(new)
    except OSError:
        log.warning("cannot keep the hash salt in %s; document hashes change with each start", path)
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
    init, cli = dict(init_options or {}), dict(overrides or {})
    toml = _file_layer(config_path, workspace, init, cli, problems)
    layers = (toml, init, cli)
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


def _file_layer(
    config_path: Path | None,
    workspace: Path | None,
    init: Mapping[str, Any],
    cli: Mapping[str, Any],
    problems: list[str],
) -> dict[str, Any]:
    """The settings files' layer: the user's own file, then a workspace file, filtered unless trusted.

    ``--config`` and ``$OPPORTUNE_CONFIG`` name the user's own file (trusted, and no workspace file is
    looked for); otherwise ``opportune.toml`` in the workspace or its parents is read through
    ``server.trust``: until the user trusts it, it cannot change where code and keys go, what is loaded
    or what listens, and the keys it tried are named in one message."""
    user = trust.user_config_file()
    layer = load_toml(user, problems) if user.is_file() else {}
    if config_path is not None or os.environ.get("OPPORTUNE_CONFIG"):
        own = config_path or find_config(workspace)
        return _deep_merge(layer, load_toml(own, problems)) if own is not None else layer
    path = find_config(workspace)
    if path is None or path.resolve() == user.resolve():
        return layer
    data, content = read_toml(path, problems)
    if content is None or not data:
        return layer
    editor_trust, _ = resolve(init, cli)  # an editor that trusts the file says so in the user's settings
    if not trust.is_trusted(path, content, editor_trust.trust.workspace_config_sha256):
        filtered = trust.filter_untrusted(data)
        if filtered.refused:
            problems.append(trust.refusal_message(path, filtered.refused))
            log.warning("%s", problems[-1])
        data = filtered.layer
    return _deep_merge(layer, data)


def _deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


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
        backend_factory or make_backend,
        config,
        record=record,
        install_id=install,
        notify_user=notify_user,
        hash_salt=hash_salt(),
        root=workspace,
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
