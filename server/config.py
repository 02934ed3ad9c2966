"""Typed settings: defaults here, then opportune.toml, then the editor's initializationOptions.

This is the one place where settings are named, typed, defaulted, validated and documented: the docstring
under each field is its documentation everywhere (VS Code's settings and Neovim's help are generated from
it by scripts/sync_editors.py).  Keys may be
snake_case (opportune.toml) or camelCase (editors); an unknown key or a wrong type is reported with its full
name and the default is kept, so a typo never stops the server.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin


@dataclass(frozen=True)
class CompletionSettings:
    deadline_ms: int = 300
    """Hard budget from request to answer. What the model has produced by then is answered; the rest is
    generated in the background into the typeahead cache."""
    max_tokens: int = 40
    """Most tokens generated for one suggestion (background continuation included)."""
    single_line_max_tokens: int = 24
    """Most tokens for a single-line suggestion."""
    debounce_ms: int = 0
    """Fixed wait before starting the model; a newer keystroke during it cancels the request for free."""
    adaptive_debounce: bool = False
    """Derive the debounce from the typing rhythm: wait while the user is mid-burst, start at once after a pause."""
    multiline: Literal["auto", "always", "never"] = "auto"
    """auto: several lines only where the syntax expects a block (an empty body)."""
    max_lines: int = 8
    """Most lines of a multi-line suggestion."""
    context_tokens: int = 512
    """Prompt budget in model tokens, measured with the model's own tokenizer."""
    prompt_strategy: Literal["syntax", "prefix"] = "syntax"
    """syntax: imports, enclosing signatures and an outline from tree-sitter, then the code before the cursor;
    prefix: only the code before the cursor (and after it, for FIM models)."""
    suffix_lines: int = 8
    """Lines after the cursor shown to FIM-capable models."""
    window_step_lines: int = 16
    """The code window before the cursor starts on a multiple of this many lines, so its start stays put while
    the user types and the evaluated prompt can be reused from the KV cache."""
    project_context: bool = True
    """Show the model what the rest of the workspace says about the code at the cursor (the prompt's
    ``project`` part, before the file's own context): definitions imported from workspace files, other open
    files, snippets similar to the cursor's code, recently edited regions.  Only with the syntax strategy."""
    project_share: float = 0.3
    """Share of ``context_tokens`` the project part may take (the window before the cursor keeps the rest)."""
    project_imports: bool = True
    """Signatures, fields and first docstring lines of the names the file imports from the workspace."""
    project_imports_share: float = 0.5
    """Share of the project part first offered to imported definitions (what a source leaves goes to the
    next, in the order imports, open files, similar snippets, recent edits)."""
    project_open_files: bool = True
    """An outline of the other open documents."""
    project_open_files_share: float = 0.15
    """Share of the project part first offered to the outline of other open files."""
    project_similar: bool = True
    """The windows of open and recently closed files most like the code before the cursor (Jaccard over
    identifier sets)."""
    project_similar_share: float = 0.2
    """Share of the project part first offered to similar snippets."""
    project_recent_edits: bool = True
    """The lines around the places the user edited last (away from the cursor)."""
    project_recent_edits_share: float = 0.15
    """Share of the project part first offered to recently edited regions."""
    project_max_files: int = 100_000
    """Most files of the workspace indexed (on a thread of its own) to resolve imports by path."""
    project_max_file_bytes: int = 1_000_000
    """Workspace files larger than this are never read."""
    temperature: float = 0.0
    """Sampling temperature; 0 always picks the most likely token (the same suggestion for the same context)."""
    min_confidence: float = 0.0
    """Cut a suggestion before the first token the model gave less than this probability (at a word
    boundary), and show nothing when that is its very first token; the generation goes on into the
    typeahead cache.  0 (the default) shows every suggestion whole.  At statement starts 0.3 measured well
    (bench/confidence_cut.py, embedded model, 24 positions: first-line acceptance 0.21 -> 0.35, wrong
    suggestions -30%), but typing mid-word it silenced every suggestion of an end-to-end test: the model
    gives a word's second token a low probability (token boundaries), so it stays an arm parameter until
    the threshold accounts for that."""
    typeahead_cache: bool = True
    """Answer from the suggestion on screen when the user types its first characters."""
    prewarm: bool = True
    """Evaluate the stable part of the prompt when a file is opened or the user pauses."""
    enabled: bool = True
    """Offer completions; editors switch this with their toggle command (``opportune/setEnabled``)."""


@dataclass(frozen=True)
class NextEditSettings:
    enabled: bool = True
    """Offer next edits (``opportune/nextEdit`` and code actions).  Off, changes are still detected and counted
    as edit opportunities, so arms with and without next edits share one denominator."""
    max_edits: int = 20
    """Most follow-up edits in one answer."""
    history_hunks: int = 8
    """Recent hunks of a document looked at for a change with follow-ups, newest first."""
    workspace: bool = True
    """Look for call sites and uses in the workspace's files too (indexed in the background)."""
    workspace_max_files: int = 2000
    """Most workspace files indexed."""
    workspace_max_file_kb: int = 512
    """Workspace files larger than this are not indexed."""
    max_document_kb: int = 1024
    """A document larger than this is not analysed (a generated file): next edits stay quiet there."""
    quiet_ms: int = 150
    """A request is analysed once the document has been quiet this long: mid-burst, the next keystroke
    supersedes it for free and completions keep the machine (a client that asks after a pause waits nothing)."""


@dataclass(frozen=True)
class ModelSettings:
    backend: Literal["llama", "fake", "openai", "llama-server"] = "llama"
    """llama: a local GGUF through llama-cpp-python; fake: a deterministic stand-in for tests only;
    openai / llama-server: a remote endpoint."""
    path: str = ""
    """A GGUF file; empty means the embedded default model (Gemma 3 270M)."""
    threads: int = 0
    """CPU threads for the model; 0 means half the cores (spinning threads stall on a busy machine)."""
    n_ctx: int = 2048
    """Model context window in tokens (prompt budget + generated tokens must fit)."""
    endpoint: str = ""
    """Base URL of a remote inference server (openai or llama-server backends)."""
    remote_model: str = ""
    """Model name sent to the remote endpoint."""
    api_key_env: str = "OPPORTUNE_API_KEY"
    """Environment variable holding the remote API key; the key itself is never stored or logged."""
    timeout_ms: int = 10000
    """Remote backends: longest wait for the server's next byte, first token included."""
    fake_latency_ms: float = 0.0
    """fake backend only: delay per generated token."""


@dataclass(frozen=True)
class TelemetrySettings:
    enabled: bool = True
    """Record completion events in the local SQLite store.  Nothing leaves the machine."""
    db: str = ""
    """SQLite file; empty means opportune/telemetry.db in the user's state directory."""
    store_text: bool = False
    """Opt in to storing prompts and suggestions. Off: only counts, lengths, timings and hashes are stored."""
    flush_interval_s: float = 1.0
    """Events are written in batches at this interval; a SIGKILL loses at most this much."""
    metrics_port: int = 0
    """Serve Prometheus metrics on this port; 0 turns the endpoint off."""
    metrics_host: str = "127.0.0.1"
    """Address the Prometheus endpoint listens on; keep loopback unless the network is trusted."""
    install_id: str = ""
    """Randomisation unit for experiments; empty means a random id kept in the state directory."""
    persistence_checkpoints_s: list[float] = field(default_factory=lambda: [30.0, 120.0, 600.0])
    """Seconds after an accept at which the server measures how much of the accepted text is still there
    (a ``persistence`` row each; 1 to 8 checkpoints, each 0.1 s to 1 day; empty turns tracking off)."""
    persistence_max_tracked: int = 256
    """Most accepted suggestions followed at once; beyond it the oldest one's remaining checkpoints are
    recorded as unknown (bounds the memory of a long session)."""


@dataclass(frozen=True)
class ArmSettings:
    name: str = ""
    """The arm's name, as reports show it."""
    weight: float = 1.0
    """Share of installs: an arm gets weight / sum of weights of them."""
    completion: dict[str, Any] = field(default_factory=dict)
    """Overrides of [completion] keys for this arm."""
    model: dict[str, Any] = field(default_factory=dict)
    """Overrides of [model] keys for this arm."""
    next_edit: dict[str, Any] = field(default_factory=dict)
    """Overrides of [next_edit] keys for this arm (next edits on/off and their parameters)."""


@dataclass(frozen=True)
class ExperimentSettings:
    name: str = ""
    """Empty: no experiment running."""
    control: str = ""
    """The arm others are compared with; default the first."""
    arms: list[ArmSettings] = field(default_factory=list)
    """The arms: tables of name, weight, and the completion and model keys each overrides."""


@dataclass(frozen=True)
class TrustSettings:
    workspace_config_sha256: str = ""
    """Set by an editor with a trust mechanism of its own (Neovim's :trust, VS Code's Workspace Trust): the
    sha256 of the workspace opportune.toml the user trusted there.  A workspace file cannot set it."""


@dataclass(frozen=True)
class Settings:
    completion: CompletionSettings = field(default_factory=CompletionSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    next_edit: NextEditSettings = field(default_factory=NextEditSettings)
    telemetry: TelemetrySettings = field(default_factory=TelemetrySettings)
    experiment: ExperimentSettings = field(default_factory=ExperimentSettings)
    trust: TrustSettings = field(default_factory=TrustSettings)
    client_name: str = ""
    """The editor, as events record it; editors send it themselves (default: LSP's clientInfo)."""


def snake(key: str) -> str:
    out = []
    for ch in key:
        if ch.isupper():
            out.append("_")
            out.append(ch.lower())
        else:
            out.append(ch)
    return "".join(out).replace("-", "_")


def _coerce(value: Any, annotation: Any, where: str, errors: list[str]) -> Any:
    origin = get_origin(annotation)
    if origin is Literal:
        if value in get_args(annotation):
            return value
        errors.append(f"{where}: {value!r} is not one of {', '.join(map(repr, get_args(annotation)))}")
        return dataclasses.MISSING
    if annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif annotation is str:
        if isinstance(value, str):
            return value
    elif origin is dict:
        if isinstance(value, Mapping):
            return dict(value)
    elif origin is list and get_args(annotation) and get_args(annotation)[0] is float:
        if isinstance(value, list) and all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in value
        ):
            return [float(v) for v in value]
    elif origin is list and get_args(annotation) and dataclasses.is_dataclass(get_args(annotation)[0]):
        if isinstance(value, list):
            item_type = get_args(annotation)[0]
            items = []
            for i, item in enumerate(value):
                if isinstance(item, Mapping):
                    items.append(merge(item_type(), item, f"{where}[{i}]", errors))
                else:
                    errors.append(f"{where}[{i}]: expected a table")
            return items
    elif dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        if isinstance(value, Mapping):
            return merge(annotation(), value, where, errors)
    elif origin in (types.UnionType, typing.Union):
        return value
    type_name = getattr(annotation, "__name__", str(annotation))
    errors.append(f"{where}: expected {type_name}, got {type(value).__name__} {value!r}")
    return dataclasses.MISSING


def merge(target: Any, data: Mapping[str, Any], where: str, errors: list[str]) -> Any:
    """Return a copy of dataclass ``target`` with ``data`` applied; problems go to ``errors``."""
    hints = typing.get_type_hints(type(target))
    known = {f.name for f in dataclasses.fields(target)}
    changes: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = snake(str(raw_key))
        name = f"{where}.{raw_key}" if where else str(raw_key)
        if key not in known:
            errors.append(f"{name}: unknown setting")
            continue
        current = getattr(target, key)
        if dataclasses.is_dataclass(current) and isinstance(value, Mapping):
            changes[key] = merge(current, value, name, errors)
            continue
        coerced = _coerce(value, hints[key], name, errors)
        if coerced is not dataclasses.MISSING:
            changes[key] = coerced
    return dataclasses.replace(target, **changes)


MAX_CONFIG_BYTES = 1 << 20
"""A settings file larger than this is not read (a settings file is a few hundred bytes)."""
MAX_CONFIG_DEPTH = 32
"""Tables and arrays nested deeper than this are refused (no setting is nested more than four deep)."""


def load_toml(path: Path, errors: list[str]) -> dict[str, Any]:
    """The settings in a TOML file; any problem (unreadable, not UTF-8, not TOML, too large or too deep) is
    reported by file name and line, and the file then counts as empty: the other layers still apply."""
    return read_toml(path, errors)[0]


def read_toml(path: Path, errors: list[str]) -> tuple[dict[str, Any], bytes | None]:
    """The settings in a TOML file and the bytes they were read from (None when unreadable)."""
    try:
        with path.open("rb") as f:
            content = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        errors.append(f"{path}: cannot read ({e.strerror or type(e).__name__})")
        return {}, None
    if len(content) > MAX_CONFIG_BYTES:
        errors.append(f"{path}: larger than {MAX_CONFIG_BYTES // 1024} KB, not read")
        return {}, content
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as e:
        line = content[: e.start].count(b"\n") + 1
        errors.append(f"{path}: line {line}: not UTF-8 (byte 0x{content[e.start]:02x}); file ignored")
        return {}, content
    deep = _too_deep(text, MAX_CONFIG_DEPTH)
    if deep is not None:
        errors.append(f"{path}: line {deep}: nested more than {MAX_CONFIG_DEPTH} deep; file ignored")
        return {}, content
    try:
        return tomllib.loads(text), content
    except tomllib.TOMLDecodeError as e:
        errors.append(f"{path}: invalid TOML ({e}); file ignored")
    except (RecursionError, MemoryError, ValueError) as e:  # a parser limit, whatever the scan missed
        errors.append(f"{path}: cannot be read as settings ({type(e).__name__}); file ignored")
    return {}, content


def _too_deep(text: str, limit: int) -> int | None:
    """The line where brackets first nest deeper than ``limit`` (strings and comments skipped), or None.

    tomllib parses arrays recursively: 5,000 nested brackets raise RecursionError, which must not reach the
    server as an internal error.  The scan is rough (it does not know multi-line strings) and errs on the
    side of reporting, which is safe for a settings file."""
    depth = 0
    line = 1
    quote = ""
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\n":
            line += 1
            if quote in ('"', "'"):
                quote = ""
        elif quote:
            if ch == "\\" and quote == '"':
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return line
        elif ch in "]}":
            depth = max(0, depth - 1)
        i += 1
    return None


def find_config(start: Path | None = None) -> Path | None:
    """opportune.toml in the given folder or its parents, or $OPPORTUNE_CONFIG."""
    env = os.environ.get("OPPORTUNE_CONFIG")
    if env:
        return Path(env)
    folder = (start or Path.cwd()).resolve()
    for candidate in (folder, *folder.parents):
        path = candidate / "opportune.toml"
        if path.is_file():
            return path
    return None


def resolve(*layers: Mapping[str, Any], base: Settings | None = None) -> tuple[Settings, list[str]]:
    """Apply layers in order over the defaults; returns the settings and every problem found."""
    errors: list[str] = []
    settings = base or Settings()
    for layer in layers:
        if not isinstance(layer, Mapping):
            errors.append(f"settings: expected an object, got {type(layer).__name__}")
            continue
        settings = merge(settings, layer, "", errors)
    settings, problems = _check_ranges(settings, base or Settings())
    return settings, errors + problems


# Bounds of numeric settings: a value outside them is reported and the previous value kept, so a typo
# (a deadline of -300, a debounce of an hour) cannot leave the server answering nothing.
RANGES: dict[tuple[str, str], tuple[float, float]] = {
    ("completion", "deadline_ms"): (1, 600_000),  # remote backends and the eval wait long
    ("completion", "max_tokens"): (1, 512),
    ("completion", "single_line_max_tokens"): (1, 512),
    ("completion", "debounce_ms"): (0, 2_000),
    ("completion", "max_lines"): (1, 200),
    ("completion", "context_tokens"): (32, 131_072),
    ("completion", "suffix_lines"): (0, 200),
    ("completion", "window_step_lines"): (1, 1_000),
    ("completion", "temperature"): (0.0, 2.0),
    ("completion", "min_confidence"): (0.0, 1.0),
    ("completion", "project_share"): (0.0, 0.8),
    ("completion", "project_imports_share"): (0.0, 1.0),
    ("completion", "project_open_files_share"): (0.0, 1.0),
    ("completion", "project_similar_share"): (0.0, 1.0),
    ("completion", "project_recent_edits_share"): (0.0, 1.0),
    ("completion", "project_max_files"): (0, 10_000_000),
    ("completion", "project_max_file_bytes"): (1_000, 100_000_000),
    ("next_edit", "max_edits"): (1, 500),
    ("next_edit", "history_hunks"): (1, 16),
    ("next_edit", "workspace_max_files"): (0, 100_000),
    ("next_edit", "workspace_max_file_kb"): (1, 100_000),
    ("next_edit", "max_document_kb"): (1, 100_000),
    ("next_edit", "quiet_ms"): (0, 5_000),
    ("model", "threads"): (0, 1_024),
    ("model", "n_ctx"): (128, 1_048_576),
    ("model", "timeout_ms"): (100, 600_000),
    ("telemetry", "flush_interval_s"): (0.01, 3_600),
    ("telemetry", "metrics_port"): (0, 65_535),
    ("telemetry", "persistence_max_tracked"): (1, 100_000),
}
PERSISTENCE_CHECKPOINT_RANGE_S = (0.1, 86_400.0)
MAX_PERSISTENCE_CHECKPOINTS = 8


def _check_ranges(s: Settings, base: Settings) -> tuple[Settings, list[str]]:
    problems = []
    for (section, key), (lo, hi) in RANGES.items():
        value = getattr(getattr(s, section), key)
        if not lo <= value <= hi:
            kept = getattr(getattr(base, section), key)
            problems.append(
                f"{section}.{key} must be between {lo:g} and {hi:g}; got {value:g}, kept {kept:g}"
            )
            s = dataclasses.replace(s, **{section: dataclasses.replace(getattr(s, section), **{key: kept})})
    t = s.telemetry
    lo_s, hi_s = PERSISTENCE_CHECKPOINT_RANGE_S
    if len(t.persistence_checkpoints_s) > MAX_PERSISTENCE_CHECKPOINTS or not all(
        lo_s <= v <= hi_s for v in t.persistence_checkpoints_s
    ):
        kept_list = base.telemetry.persistence_checkpoints_s
        problems.append(
            f"telemetry.persistence_checkpoints_s must hold at most {MAX_PERSISTENCE_CHECKPOINTS} values "
            f"between {lo_s:g} and {hi_s:g}; kept {kept_list}"
        )
        t = dataclasses.replace(t, persistence_checkpoints_s=list(kept_list))
    s = dataclasses.replace(
        s,
        telemetry=dataclasses.replace(t, persistence_checkpoints_s=sorted(set(t.persistence_checkpoints_s))),
    )
    c = s.completion
    if c.context_tokens > s.model.n_ctx - c.max_tokens:
        fitted = max(32, s.model.n_ctx - c.max_tokens)
        problems.append(
            f"completion.context_tokens must leave room for max_tokens in model.n_ctx; using {fitted}"
        )
        s = dataclasses.replace(s, completion=dataclasses.replace(c, context_tokens=fitted))
    if s.experiment.name and not s.experiment.arms:
        problems.append("experiment.arms: an experiment needs at least one arm")
    names = [a.name for a in s.experiment.arms]
    if any(not n for n in names) or len(set(names)) != len(names):
        problems.append("experiment.arms: every arm needs a unique name")
    if any(a.weight < 0 for a in s.experiment.arms):
        problems.append("experiment.arms: weights must not be negative")
    return s, problems


def with_arm(settings: Settings, arm: ArmSettings) -> tuple[Settings, list[str]]:
    """The effective settings for an arm: its overrides applied over the base settings."""
    return resolve(
        {"completion": arm.completion, "model": arm.model, "next_edit": arm.next_edit}, base=settings
    )


def as_dict(settings: Any) -> dict[str, Any]:
    return dataclasses.asdict(settings)
