"""Workspace trust: what an `opportune.toml` found in a workspace (or its parents) may set before the user
trusted it.

A cloned repository can ship an `opportune.toml`.  Until the user trusts that exact file, it may tune how
suggestions look, but not change where code or credentials go, what the server listens on, what it loads
or where it records: those keys (``REFUSED``) are taken out of the file's layer and named once, with the
command that trusts the file.  Trusting records the file's sha256 in the user's state directory, so an
edited file (a new endpoint slipped into a trusted repository) needs trusting again.

The user's own settings are never filtered: the user config file, ``$OPPORTUNE_CONFIG``, ``--config``,
the editor's user settings (``initializationOptions``) and the command line.  Editors with a trust
mechanism of their own (Neovim's ``:trust``, VS Code's Workspace Trust) tell the server through the
``trust.workspace_config_sha256`` setting, which a workspace file can of course not set for itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from opportune.server.config import ModelSettings, TelemetrySettings, snake

log = logging.getLogger(__name__)

TRUST_FILE = "trusted_configs.json"

# Keys an untrusted workspace file may not set, by section: where code and credentials are sent (backend,
# endpoint, the key's variable, the model name sent there), what is loaded (model.path, unless inside the
# user's own model folders: see ``model_path_allowed``), what listens (metrics), and what is recorded where
# (the store, its text, the install id that picks the experiment arm).
REFUSED: dict[str, frozenset[str]] = {
    "model": frozenset({"backend", "endpoint", "api_key_env", "remote_model", "path"}),
    "telemetry": frozenset({"db", "store_text", "metrics_port", "metrics_host", "install_id"}),
    "trust": frozenset({"workspace_config_sha256"}),
}
_DEFAULTS: dict[str, Any] = {"model": ModelSettings(), "telemetry": TelemetrySettings()}


def trust_file() -> Path:
    """Where trusted files' hashes are kept (the user's state directory, beside the install id)."""
    return Path(platformdirs.user_state_dir("opportune")) / TRUST_FILE


def user_config_file() -> Path:
    """The user's own settings file: trusted, applied before any workspace file."""
    return Path(platformdirs.user_config_dir("opportune")) / "opportune.toml"


def model_folders() -> list[Path]:
    """The user's own model folders: a workspace file may point ``model.path`` inside them."""
    from opportune.server.models import cache_dir

    return [cache_dir(), Path(platformdirs.user_data_dir("opportune")) / "models"]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _key(path: Path) -> str:
    return str(path.expanduser().resolve())


def _records() -> dict[str, str]:
    try:
        data = json.loads(trust_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): str(v) for k, v in data.items() if isinstance(v, str)}


def _write(records: Mapping[str, str]) -> None:
    path = trust_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    # Atomic: a crash while trusting must not leave a half-written file (that would trust nothing, or worse).
    fd, tmp = tempfile.mkstemp(prefix=".trusted-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(dict(sorted(records.items())), f, indent=1)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def is_trusted(path: Path, content: bytes, editor_sha256: str = "") -> bool:
    """Whether the user trusted this file with exactly this content (here, or in their editor)."""
    digest = sha256(content)
    return _records().get(_key(path)) == digest or (bool(editor_sha256) and editor_sha256.lower() == digest)


def trust(path: Path) -> str:
    """Record the file's current content as trusted; returns its sha256."""
    digest = sha256(path.read_bytes())
    records = _records()
    records[_key(path)] = digest
    _write(records)
    return digest


def forget(path: Path) -> bool:
    """Withdraw trust from a file; returns whether it was trusted."""
    records = _records()
    if records.pop(_key(path), None) is None:
        return False
    _write(records)
    return True


def trusted_files() -> dict[str, str]:
    return _records()


def model_path_allowed(value: Any) -> bool:
    """An empty path (the embedded model) or one inside the user's own model folders."""
    if not isinstance(value, str):
        return True  # the wrong type is reported by the settings layer; nothing is loaded from it
    if not value.strip():
        return True
    try:
        target = Path(value).expanduser().resolve()
        return any(target.is_relative_to(folder.expanduser().resolve()) for folder in model_folders())
    except (OSError, RuntimeError, ValueError):
        return False


def _refused(section: str, key: str, value: Any) -> bool:
    if key not in REFUSED.get(section, ()):
        return False
    if section == "model" and key == "path":
        return not model_path_allowed(value)
    default = _DEFAULTS.get(section)
    # A file that only spells out a default changes nothing: not worth a word to the user.
    return default is None or getattr(default, key, object()) != value


@dataclass
class Filtered:
    """A workspace file's layer with the keys it may not set taken out."""

    layer: dict[str, Any]
    refused: list[str] = field(default_factory=list)


def _filter_section(section: str, data: Mapping[str, Any], where: str, refused: list[str]) -> dict[str, Any]:
    kept: dict[str, Any] = {}
    for raw_key, value in data.items():
        if _refused(section, snake(str(raw_key)), value):
            refused.append(f"{where}.{raw_key}")
        else:
            kept[raw_key] = value
    return kept


def filter_untrusted(layer: Mapping[str, Any]) -> Filtered:
    """Take out of an untrusted file's settings what it may not set (also inside experiment arms)."""
    refused: list[str] = []
    out: dict[str, Any] = {}
    for raw_section, value in layer.items():
        section = snake(str(raw_section))
        if section in REFUSED and isinstance(value, Mapping):
            out[raw_section] = _filter_section(section, value, str(raw_section), refused)
        elif section == "experiment" and isinstance(value, Mapping):
            out[raw_section] = _filter_experiment(value, str(raw_section), refused)
        else:
            out[raw_section] = value
    return Filtered(out, refused)


def _filter_experiment(data: Mapping[str, Any], where: str, refused: list[str]) -> dict[str, Any]:
    out = dict(data)
    arms = data.get("arms")
    if not isinstance(arms, list):
        return out
    kept_arms: list[Any] = []
    for i, arm in enumerate(arms):
        if isinstance(arm, Mapping) and isinstance(arm.get("model"), Mapping):
            arm = {
                **arm,
                "model": _filter_section("model", arm["model"], f"{where}.arms[{i}].model", refused),
            }
        kept_arms.append(arm)
    out["arms"] = kept_arms
    return out


def refusal_message(path: Path, refused: list[str]) -> str:
    """The one message that names what was ignored and how to trust the file."""
    return (
        f"{path} is not trusted, so it may not set {', '.join(refused)} (where code and keys are sent, "
        f"what is loaded or listens); those settings were ignored. If you trust this file, run: "
        f"opportune trust {path}"
    )
