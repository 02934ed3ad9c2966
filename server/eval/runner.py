"""Running configurations through the engine the editor uses: quality on tasks, CPO from typing.

Each configuration gets its own session (``opportune.server.session.start_session``: settings, backend, engine) and
its own telemetry store.  Two phases, in this order so that the typing starts from a fresh engine as a
user's session does:

1. Typing simulation (``opportune.server.eval.typing.replay``): a few spans of real code typed keystroke by keystroke
   in real time against the real model.  The design asks for a virtual clock that charges each request its
   measured latency; on one machine, replaying in real time on the real model *is* that clock, with the
   latency measured rather than modelled (prefill, KV-cache reuse, cancellation and the typeahead cache all
   play as they would in an editor).  The engine records its telemetry into the configuration's store, each
   span under its own install id (the span is the unit of the paired bootstrap, as the install is online),
   and the funnel and CPO are read back with the same code as the online report
   (``opportune.telemetry.cpo.summarise(telemetry.store.open_events([db]))``).
2. Quality: every task is opened as a document with the held-out text taken out and completed once with an
   invoked request under a generous deadline (``QUALITY_DEADLINE_MS``), so the measure is what the model
   and the prompt can do, not how fast.  Pre-warming is off in this phase (it would only cost time).  These
   invoked requests are not recorded: they are not opportunities anyone had.

Each quality task's project folder is the engine's workspace root, so the project context (imports resolved
to the project's files) plays as in an editor opened on that project; a cross-file task
(``opportune.server.eval.crossfile``) also opens the files an editor would have open before asking.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from opportune.server.backends.base import Backend, BackendError
from opportune.server.completion import Engine
from opportune.server.config import Settings, as_dict, load_toml, resolve
from opportune.server.documents import Document
from opportune.server.eval.crossfile import project_root
from opportune.server.eval.execution import TaskTests
from opportune.server.eval.metrics import Scores, score
from opportune.server.eval.tasks import Span, Task, file_uri
from opportune.server.eval.typing import ReplayStats, TypingModel, replay
from opportune.server.session import effective, start_session
from opportune.telemetry import events as ev
from opportune.telemetry.cpo import Funnel, GroupSummary, returned_latencies, summarise
from opportune.telemetry.store import EventStore, open_events

log = logging.getLogger(__name__)

QUALITY_DEADLINE_MS = 60_000  # what the model can do, not how fast: the typing phase measures speed
PRESET_PREFIX = "builtin:"


class ConfigError(Exception):
    """A configuration cannot be used; the message says which and why."""


@dataclass(frozen=True)
class Configuration:
    name: str
    source: str  # the TOML file or the preset it came from
    layers: tuple[Mapping[str, Any], ...]
    settings: Settings = field(compare=False)

    def differences(self) -> dict[str, Any]:
        """Settings that differ from the defaults (``completion.context_tokens`` style keys)."""
        return _diff(as_dict(Settings()), as_dict(self.settings))


def _diff(base: Mapping[str, Any], other: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in other.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and isinstance(base.get(key), Mapping):
            out.update(_diff(base[key], value, name + "."))
        elif base.get(key) != value:
            out[name] = value
    return out


def preset_layer(name: str) -> dict[str, Any]:
    """Settings of a ``builtin:`` preset: ``+``-joined words such as ``prefix+ctx256``.

    Words: ``default``, ``prefix``/``syntax`` (prompt strategy), ``ctxN`` (context tokens), ``deadlineN``,
    ``debounceN``, ``maxtokensN``, ``multiline-auto|always|never``, ``adaptive-debounce``, ``no-cache``,
    ``project``/``no-project`` (project-wide context on or off).
    """
    completion: dict[str, Any] = {}
    for word in filter(None, name.split("+")):
        if word == "default":
            continue
        if word in ("prefix", "syntax"):
            completion["prompt_strategy"] = word
        elif word.startswith("multiline-"):
            completion["multiline"] = word.removeprefix("multiline-")
        elif word == "adaptive-debounce":
            completion["adaptive_debounce"] = True
        elif word == "no-cache":
            completion["typeahead_cache"] = False
        elif word in ("project", "no-project"):
            completion["project_context"] = word == "project"
        else:
            for stem, key in (
                ("ctx", "context_tokens"),
                ("deadline", "deadline_ms"),
                ("debounce", "debounce_ms"),
                ("maxtokens", "max_tokens"),
            ):
                if word.startswith(stem) and word[len(stem) :].isdigit():
                    completion[key] = int(word[len(stem) :])
                    break
            else:
                raise ConfigError(f"{PRESET_PREFIX}{name}: unknown preset word {word!r}")
    return {"completion": completion} if completion else {}


def load_configuration(spec: str, extra: Mapping[str, Any] | None = None) -> Configuration:
    """``A.toml``, ``NAME=A.toml``, ``builtin:prefix+ctx256`` or ``NAME=builtin:...``."""
    name = ""
    target = spec
    head, sep, tail = spec.partition("=")
    if sep and "/" not in head and not Path(spec).exists():
        name, target = head.strip(), tail.strip()
    if target.startswith(PRESET_PREFIX):
        preset = target.removeprefix(PRESET_PREFIX)
        layer = preset_layer(preset)
        name = name or preset or "default"
    else:
        path = Path(target)
        problems: list[str] = []
        if not path.is_file():
            raise ConfigError(f"{target}: no such configuration file")
        layer = load_toml(path, problems)
        if problems:
            raise ConfigError("; ".join(problems))
        name = name or path.stem
    if "experiment" in layer:
        # The harness compares configurations itself; an arm drawn by install id would hide which ran.
        raise ConfigError(
            f"{spec}: [experiment] has no meaning in an eval configuration; give one file per arm"
        )
    layers = (layer, *([extra] if extra else []))
    settings, errors = resolve(*layers)
    if errors:
        raise ConfigError(f"{spec}: " + "; ".join(errors))
    return Configuration(name, target, layers, settings)


@dataclass
class TaskResult:
    task_id: str
    kind: str
    language: str
    prediction: str
    truth: str
    scores: Scores
    latency_ms: float


@dataclass
class SpanResult:
    span_id: str
    chars: int
    unit: str  # the install id its events carry
    funnel: Funnel
    replay: ReplayStats


@dataclass
class ConfigResult:
    config: Configuration
    model_id: str
    store: Path | None
    tasks: list[TaskResult] = field(default_factory=list)
    spans: list[SpanResult] = field(default_factory=list)
    typing: GroupSummary | None = None
    typing_latencies_ms: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    # The corpus's tests with each completion inserted (server.eval.execution), aligned with ``tasks``;
    # empty when they were not run (``opportune eval --run-tests``).
    tests: list[TaskTests] = field(default_factory=list)


class EventRouter:
    """The session's event sink: events go to the current phase's store, or nowhere."""

    def __init__(self) -> None:
        self.target: EventStore | None = None

    def record(self, event: ev.Event) -> None:
        if self.target is not None:
            self.target.record(event)

    def flush(self) -> bool:
        return self.target.flush() if self.target is not None else True

    def close(self) -> None:
        if self.target is not None:
            self.target.close()
            self.target = None


def _progress(total: int, desc: str, enabled: bool, unit: str) -> tqdm[Any]:
    # tqdm draws on stderr and only on a terminal (disable=None), so logs and CI output stay clean.
    return tqdm(
        total=total, desc=desc, unit=unit, file=sys.stderr, disable=None if enabled else True, leave=False
    )


async def run_quality(
    engine: Engine, tasks: Sequence[Task], progress: Callable[[], None] | None = None
) -> list[TaskResult]:
    results = []
    for task in tasks:
        uri = task.uri()
        document = task.document
        root = project_root(task.file)
        if root is not None:
            engine.project.set_root(root)
        # What an editor would have open: files viewed shortly before (closed again), the imported ones.
        for viewed in task.recent_files:
            engine.open(file_uri(viewed), viewed.text, viewed.language, 1)
            engine.close(file_uri(viewed))
        opened = [file_uri(f) for f in task.open_files if file_uri(f) != uri]
        for f in task.open_files:
            if file_uri(f) != uri:
                engine.open(file_uri(f), f.text, f.language, 1)
        engine.open(uri, document, task.language, 1)
        position = Document(uri, document).position_at(task.cursor)
        started = time.perf_counter()
        try:
            suggestion = await engine.complete(uri, position, invoked=True)
        finally:
            engine.close(uri)
            for other in opened:
                engine.close(other)
        latency = suggestion.latency_ms if suggestion else (time.perf_counter() - started) * 1000
        prediction = suggestion.text if suggestion else ""
        results.append(
            TaskResult(
                task.task_id,
                task.kind,
                task.language,
                prediction,
                task.truth,
                score(prediction, task.truth, task.language),
                latency,
            )
        )
        if progress:
            progress()
    return results


async def run_typing(
    engine: Engine,
    spans: Sequence[Span],
    store: EventStore,
    router: EventRouter,
    unit_prefix: str,
    typing: TypingModel,
    time_scale: float = 1.0,
    progress: Callable[[], None] | None = None,
    accept: bool = True,
) -> tuple[list[SpanResult], GroupSummary | None, list[float]]:
    """Type every span into ``engine`` with its events in ``store``; the funnel per span and overall."""
    router.target = store
    units: list[tuple[Span, str, ReplayStats]] = []
    saved_install = engine.funnel.install_id
    try:
        for k, span in enumerate(spans):
            unit = f"{unit_prefix}-span{k:02d}"
            engine.funnel.install_id = unit  # events of this span carry its unit (see the module docstring)
            stats = await replay(
                engine,
                span.uri(),
                span.file.text,
                span.start,
                span.end,
                typing=typing,
                language_id=span.file.language,
                time_scale=time_scale,
                accept=accept,
            )
            units.append((span, unit, stats))
            if progress:
                progress()
    finally:
        engine.funnel.install_id = saved_install
        router.target = None
        store.close()
    if not units:
        return [], None, []
    frames = open_events([store.path])
    by_unit = {s.group["install_id"]: s.funnel for s in summarise(frames, by=["install"])}
    spans_out = [
        SpanResult(span.span_id, len(span.text), unit, by_unit.get(unit, Funnel()), stats)
        for span, unit, stats in units
    ]
    overall = summarise(frames)[0]
    latencies = [float(x) for x in returned_latencies(frames.responses).dropna()]
    return spans_out, overall, latencies


async def evaluate(
    config: Configuration,
    tasks: Sequence[Task],
    spans: Sequence[Span],
    workdir: Path,
    *,
    overrides: Mapping[str, Any] | None = None,
    typing: TypingModel | None = None,
    time_scale: float = 1.0,
    backend_factory: Callable[[Settings], Backend] | None = None,
    show_progress: bool = True,
) -> ConfigResult:
    """One configuration on the tasks and spans; raises BackendError when its model cannot be loaded."""
    started = time.perf_counter()
    workdir.mkdir(parents=True, exist_ok=True)
    no_toml = workdir / "empty.toml"  # the session must not pick up an opportune.toml from the cwd
    no_toml.write_text("")
    telemetry = {"enabled": True, "install_id": f"eval-{config.name}", "metrics_port": 0}
    layers: dict[str, Any] = {**as_dict(config.settings), "experiment": {}}
    layers["telemetry"] = {**layers["telemetry"], **telemetry}
    router = EventRouter()
    session = start_session(
        layers,
        overrides=overrides,
        config_path=no_toml,
        store=router,
        backend_factory=backend_factory,
    )
    result = ConfigResult(config, "", None, problems=list(session.problems))
    engine = session.engine
    try:
        error = await asyncio.to_thread(engine.load_backend)
        if error:
            raise BackendError(error)
        result.model_id = engine.model_id
        in_force = session.config
        settings = in_force.settings
        if spans:
            store_path = workdir / f"{config.name}.db"
            with contextlib.suppress(FileNotFoundError):
                store_path.unlink()
            store = EventStore(store_path, flush_interval_s=0.5)
            result.store = store_path
            with _progress(len(spans), f"{config.name}: typing", show_progress, "span") as bar:
                result.spans, result.typing, result.typing_latencies_ms = await run_typing(
                    engine,
                    spans,
                    store,
                    router,
                    f"eval-{config.name}",
                    typing or TypingModel(),
                    time_scale,
                    progress=lambda: bar.update(1),
                )
        if tasks:
            quality = dataclasses.replace(
                settings,
                completion=dataclasses.replace(
                    settings.completion, deadline_ms=QUALITY_DEADLINE_MS, prewarm=False
                ),
            )
            engine.reconfigure(effective(quality, in_force.arm))
            with _progress(len(tasks), f"{config.name}: quality", show_progress, "task") as bar:
                result.tasks = await run_quality(engine, tasks, progress=lambda: bar.update(1))
            engine.reconfigure(in_force)
    finally:
        await asyncio.to_thread(session.close)
    result.seconds = time.perf_counter() - started
    return result
