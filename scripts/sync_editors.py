"""Write the editors' copies of the server's definitions, or check them (``--check``, as CI does).

    python scripts/sync_editors.py          # rewrite the generated files
    python scripts/sync_editors.py --check  # exit 1 and show a diff when one is out of date

One source, two editors:
- the custom protocol (``server/protocol.py``) -> ``editors/vscode/src/protocol.ts`` and
  ``editors/nvim/lua/opportune/protocol.lua``;
- the settings (``server/config.py``: names, types, defaults, bounds, and the docstring under each field)
  -> VS Code's contributed settings in ``editors/vscode/package.json``, the table the extension reads
  them with (``editors/vscode/src/serverSettings.ts``), and the settings section of Neovim's help
  (``editors/nvim/doc/opportune.txt``).

tests/test_editor_contracts.py runs ``--check``, so an edit on one side only fails CI.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import difflib
import inspect
import json
import sys
import textwrap
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from opportune.server import config, protocol, trust

ROOT = Path(__file__).resolve().parents[1]
VSCODE = ROOT / "editors" / "vscode"
NVIM = ROOT / "editors" / "nvim"
HEADER = "Generated from {source} by `python scripts/sync_editors.py`: edit that file, not this one."


def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a dataclass (the string literal that follows its annotation)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, following in zip(body, [*body[1:], None], strict=True):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[node.target.id] = inspect.cleandoc(following.value.value)
    return docs


def one_line(text: str) -> str:
    """``text`` on one line, with reStructuredText's double backticks as Markdown's single ones."""
    return " ".join(text.split()).replace("``", "`")


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


# --- the protocol --------------------------------------------------------------------------------------


def _ts_type(annotation: Any) -> str:
    if annotation is protocol.RejectReason:
        return "RejectReason"
    origin = get_origin(annotation)
    if origin in (types.UnionType, typing.Union):
        return " | ".join("null" if a is type(None) else _ts_type(a) for a in get_args(annotation))
    if origin is Literal:
        return " | ".join(f'"{v}"' for v in get_args(annotation))
    if origin is dict:
        return "Record<string, unknown>"
    if origin is list:
        return f"{_ts_type(get_args(annotation)[0])}[]"
    if dataclasses.is_dataclass(annotation):
        return annotation.__name__  # type: ignore[union-attr]
    simple = {str: "string", int: "number", float: "number", bool: "boolean"}
    return simple[annotation]


def _has_default(f: dataclasses.Field[Any]) -> bool:
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING


def _method_key(name: str) -> str:
    return name.split("/", 1)[1]


def _ts_jsdoc(text: str, indent: str = "") -> list[str]:
    lines = textwrap.wrap(one_line(text), 104 - len(indent))
    if len(lines) == 1:
        return [f"{indent}/** {lines[0]} */"]
    return [f"{indent}/**", *(f"{indent} * {line}" for line in lines), f"{indent} */"]


def _ts_interface(cls: type, optional_defaults: bool) -> list[str]:
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    out = _ts_jsdoc(cls.__doc__ or "")
    fields = dataclasses.fields(cls)
    if not fields:
        return [*out, f"export type {cls.__name__} = Record<string, never>;"]
    out.append(f"export interface {cls.__name__} {{")
    for f in fields:
        if f.name in docs:
            out += _ts_jsdoc(docs[f.name], "  ")
        mark = "?" if optional_defaults and _has_default(f) else ""
        out.append(f"  {protocol.camel(f.name)}{mark}: {_ts_type(hints[f.name])};")
    out.append("}")
    return out


TS_HELPERS = """
/**
 * The completion id of an item, taken from its command's first argument.
 *
 * Items without the Opportune command (another server, or a server that changed shape) yield undefined
 * and are simply not tracked.
 */
export function completionIdOf(
  command: { command: string; arguments?: unknown[] } | undefined,
): string | undefined {
  if (command?.command !== ACCEPT_COMMAND) {
    return undefined;
  }
  const first = command.arguments?.[0];
  return typeof first === "string" && first.length > 0 ? first : undefined;
}
"""


def ts_protocol() -> str:
    out = [
        "/**",
        " * The Opportune extensions to LSP: method names, params and results.",
        " *",
        " * " + HEADER.format(source="server/protocol.py"),
        " * This module imports nothing from `vscode`, so the node tests and the server integration test use the",
        " * same definitions as the extension.",
        " */",
        "",
        *_ts_jsdoc(_attribute_doc("ACCEPT_COMMAND")),
        f'export const ACCEPT_COMMAND = "{protocol.ACCEPT_COMMAND}";',
        "",
        "export const Methods = {",
        *(f'  {_method_key(name)}: "{name}",' for name in protocol.METHODS),
        "} as const;",
        "",
        *_ts_jsdoc(_attribute_doc("RejectReason")),
        "export type RejectReason = " + " | ".join(f'"{r}"' for r in get_args(protocol.RejectReason)) + ";",
    ]
    seen: set[type] = set()
    for method in protocol.METHODS.values():
        for cls, is_params in ((method.params, True), (method.result, False)):
            for each in _with_nested(cls):
                if each not in seen:
                    seen.add(each)
                    out += ["", *_ts_interface(each, optional_defaults=is_params)]
    return "\n".join(out) + "\n" + TS_HELPERS


def _with_nested(cls: type | None) -> list[type]:
    """``cls`` after the dataclasses its fields hold (directly or in lists), each once, innermost first."""
    if cls is None:
        return []
    out: list[type] = []
    for annotation in typing.get_type_hints(cls).values():
        for arg in (annotation, *get_args(annotation)):
            if dataclasses.is_dataclass(arg) and isinstance(arg, type):
                out += [c for c in _with_nested(arg) if c not in out]
    return [*out, cls]


def _attribute_doc(name: str) -> str:
    """The docstring under a module-level assignment of server/protocol.py."""
    tree = ast.parse(inspect.getsource(protocol))
    for node, following in zip(tree.body, [*tree.body[1:], None], strict=True):
        targets = node.targets if isinstance(node, ast.Assign) else []
        if (
            any(isinstance(t, ast.Name) and t.id == name for t in targets)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
        ):
            return str(following.value.value)
    raise LookupError(f"server/protocol.py: no docstring under {name}")


def _snake_method(name: str) -> str:
    """``opportune/didShowCompletion`` -> ``did_show_completion``."""
    return "".join("_" + ch.lower() if ch.isupper() else ch for ch in _method_key(name))


def _lua_type(annotation: Any) -> str:
    if annotation is protocol.RejectReason:
        return "opportune.RejectReason"
    origin = get_origin(annotation)
    if origin in (types.UnionType, typing.Union):
        inner = [a for a in get_args(annotation) if a is not type(None)]
        return _lua_type(inner[0]) + "?"
    if origin is dict or dataclasses.is_dataclass(annotation):
        return "table"
    if origin is list:
        return f"{_lua_type(get_args(annotation)[0])}[]"
    return {str: "string", int: "integer", float: "number", bool: "boolean"}[annotation]


def lua_protocol() -> str:
    reasons = get_args(protocol.RejectReason)
    out = [
        "--- Opportune's own LSP methods: their names, and a constructor for each one's params.",
        "---",
        "--- " + HEADER.format(source="server/protocol.py"),
        "",
        "local M = {}",
        "",
        *(f"--- {line}" for line in textwrap.wrap(one_line(_attribute_doc("ACCEPT_COMMAND")), 106)),
        f"M.ACCEPT_COMMAND = '{protocol.ACCEPT_COMMAND}'",
        "",
        "--- Method names.",
        "M.methods = {",
        *(f"  {_snake_method(name)} = '{name}'," for name in protocol.METHODS),
        "}",
        "",
        f"--- {one_line(_attribute_doc('RejectReason'))}",
        "---@alias opportune.RejectReason " + "|".join(f'"{r}"' for r in reasons),
        "M.reject_reasons = { " + ", ".join(f"'{r}'" for r in reasons) + " }",
        "",
        "--- An empty table is sent as a JSON object, never as an array.",
        "---@param t table",
        "---@return table",
        "local function object(t)",
        "  return next(t) == nil and vim.empty_dict() or t",
        "end",
    ]
    for name, method in protocol.METHODS.items():
        cls = method.params
        hints = typing.get_type_hints(cls)
        docs = field_docs(cls)
        fields = dataclasses.fields(cls)
        out += ["", f"--- The params of {one_line(cls.__doc__ or name)}"]
        for f in fields:
            optional = "?" if _has_default(f) else ""
            doc = one_line(docs.get(f.name, ""))
            out.append(f"---@param {f.name}{optional} {_lua_type(hints[f.name])} {doc}".rstrip())
        out.append("---@return table")
        args = ", ".join(f.name for f in fields)
        entries = ", ".join(f"{protocol.camel(f.name)} = {f.name}" for f in fields)
        table = f"{{ {entries} }}" if entries else "{}"
        out += [f"function M.{_snake_method(name)}_params({args})", f"  return object({table})", "end"]
        if method.result is not None:
            result = method.result
            result_hints = typing.get_type_hints(result)
            result_docs = field_docs(result)
            out += ["", f"---@class opportune.{result.__name__}"]
            for f in dataclasses.fields(result):
                doc = one_line(result_docs.get(f.name, ""))
                out.append(
                    f"---@field {protocol.camel(f.name)} {_lua_type(result_hints[f.name])} {doc}".rstrip()
                )
    out += ["", "return M"]
    return "\n".join(out) + "\n"


# --- the settings --------------------------------------------------------------------------------------

# Server settings an editor reaches another way: its own on/off setting and toggle command drive
# completion.enabled (opportune/setEnabled), and the client name is sent by the extension itself.
NOT_CONTRIBUTED = {"completion.enabled", "clientName"}
# Settings that hold a path: the extension expands ~, ${userHome} and ${workspaceFolder} in them.
PATHS = {"model.path", "telemetry.db"}


@dataclasses.dataclass(frozen=True)
class Setting:
    """One server setting as the editors see it."""

    key: str  # "completion.deadlineMs": section and camelCase name, as editors send it
    toml: str  # "completion.deadline_ms": as opportune.toml spells it
    annotation: Any
    default: Any
    doc: str
    bounds: tuple[float, float] | None
    restricted: bool = False  # a workspace the user has not trusted may not set it (server/trust.py)


def settings() -> list[Setting]:
    """Every setting of server/config.py, in its order, with its docstring (required)."""
    out = []
    top = typing.get_type_hints(config.Settings)
    for section in dataclasses.fields(config.Settings):
        cls = top[section.name]
        items: list[tuple[Any, dataclasses.Field[Any], str]]
        if not dataclasses.is_dataclass(cls):
            items = [(config.Settings, section, "")]
        else:
            items = [(cls, f, section.name) for f in dataclasses.fields(cls)]
        for owner, f, prefix in items:
            docs = field_docs(owner)
            toml = f"{prefix}.{f.name}" if prefix else f.name
            if f.name not in docs:
                raise LookupError(f"server/config.py: {toml} has no docstring")
            factory: Any = f.default_factory
            default = f.default if f.default is not dataclasses.MISSING else factory()
            out.append(
                Setting(
                    key=f"{prefix}.{protocol.camel(f.name)}" if prefix else protocol.camel(f.name),
                    toml=toml,
                    annotation=typing.get_type_hints(owner)[f.name],
                    default=default,
                    doc=one_line(docs[f.name]),
                    bounds=config.RANGES.get((prefix, f.name)),
                    restricted=f.name in trust.REFUSED.get(prefix, ())
                    or (prefix, f.name) == ("experiment", "arms"),  # an arm can override the model
                )
            )
    return out


def contributed() -> list[Setting]:
    return [s for s in settings() if s.key not in NOT_CONTRIBUTED]


def _json_kind(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is Literal or annotation is str:
        return "string"
    if origin is list:
        return "array"
    if origin is dict:
        return "object"
    return {bool: "boolean", int: "integer", float: "number"}[annotation]


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def _default_text(setting: Setting) -> str:
    if setting.default in ("", [], {}):
        return "empty"
    return f"`{json.dumps(setting.default)}`"


def vscode_property(setting: Setting) -> dict[str, Any]:
    """The contributed VS Code setting: unset (null or "") leaves the server's default in force."""
    kind = _json_kind(setting.annotation)
    schema: dict[str, Any] = {"type": kind if kind == "string" else [kind, "null"]}
    if get_origin(setting.annotation) is Literal:
        schema["type"] = ["string", "null"]
        schema["enum"] = [*get_args(setting.annotation), None]
    if kind == "array":
        schema["items"] = {"type": "object"}
    schema["default"] = "" if schema["type"] == "string" else None
    if setting.bounds is not None:
        schema["minimum"], schema["maximum"] = (_number(b) for b in setting.bounds)
    unset = "Empty" if schema["type"] == "string" else "null"
    schema["description"] = (
        f"{setting.doc}\n\n`{setting.toml}` in opportune.toml; server default {_default_text(setting)}. "
        f"{unset}: the server's default or opportune.toml."
    )
    return schema


# The extension's own settings that choose what runs or is loaded (the rest come from server/config.py).
CLIENT_RESTRICTED = (
    "opportune.serverPath",
    "opportune.serverArgs",
    "opportune.configFile",
)


def package_json() -> str:
    path = VSCODE / "package.json"
    manifest = json.loads(path.read_text(encoding="utf-8"))
    properties: dict[str, Any] = manifest["contributes"]["configuration"]["properties"]
    server = {f"opportune.{s.key}": vscode_property(s) for s in contributed()}
    known = {f"opportune.{s.key}" for s in settings()} | {"opportune.modelPath"}
    client = {key: value for key, value in properties.items() if key not in known}
    manifest["contributes"]["configuration"]["properties"] = {**client, **server}
    # VS Code's restricted mode: what an untrusted workspace's .vscode/settings.json may not set.
    restricted = [*CLIENT_RESTRICTED, *(f"opportune.{s.key}" for s in contributed() if s.restricted)]
    manifest["capabilities"]["untrustedWorkspaces"]["restrictedConfigurations"] = restricted
    return json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"


def ts_settings() -> str:
    out = [
        "/**",
        " * The server settings the extension contributes and sends, with the checks it applies to them.",
        " *",
        " * " + HEADER.format(source="server/config.py"),
        " */",
        "",
        "export interface ServerSetting {",
        "  /** Below `opportune.`, as VS Code names it; section and name as the server receives them. */",
        "  key: string;",
        '  type: "boolean" | "integer" | "number" | "string" | "array";',
        "  minimum?: number;",
        "  maximum?: number;",
        "  enum?: readonly string[];",
        "  /** A path: `~`, `${userHome}` and `${workspaceFolder}` are expanded. */",
        "  path?: boolean;",
        "  /** Taken only from the user's own settings while the workspace is not trusted. */",
        "  restricted?: boolean;",
        "}",
        "",
        "export const SERVER_SETTINGS: readonly ServerSetting[] = [",
    ]
    for s in contributed():
        parts = [f'key: "{s.key}"', f'type: "{_json_kind(s.annotation)}"']
        if s.bounds is not None:
            parts += [f"minimum: {_number(s.bounds[0])}", f"maximum: {_number(s.bounds[1])}"]
        if get_origin(s.annotation) is Literal:
            parts.append("enum: [" + ", ".join(f'"{v}"' for v in get_args(s.annotation)) + "]")
        if s.key in PATHS:
            parts.append("path: true")
        if s.restricted:
            parts.append("restricted: true")
        out.append("  { " + ", ".join(parts) + " },")
    out.append("];")
    return "\n".join(out) + "\n"


NVIM_BEGIN = "                                                    *opportune-server-settings*\n"
NVIM_END = "\n==============================================================================\n4. MAPPINGS"


def nvim_help() -> str:
    """doc/opportune.txt with its list of server settings regenerated (between two fixed marks)."""
    path = NVIM / "doc" / "opportune.txt"
    text = path.read_text(encoding="utf-8")
    start = text.index(NVIM_BEGIN) + len(NVIM_BEGIN)
    end = text.index(NVIM_END)
    intro = (
        "Server settings, for the `settings` table (camelCase or snake_case; the same keys as the "
        "sections of `opportune.toml`). " + HEADER.format(source="server/config.py")
    )
    lines = [*textwrap.wrap(intro, 78), ""]
    for s in settings():
        if s.key == "clientName":
            continue
        kind = _json_kind(s.annotation)
        if get_origin(s.annotation) is Literal:
            kind = "|".join(f'"{v}"' for v in get_args(s.annotation))
        bounds = f", {_number(s.bounds[0])} to {_number(s.bounds[1])}" if s.bounds else ""
        lines.append(f"{s.key}  ({kind}, default {_default_text(s)}{bounds})")
        lines += textwrap.wrap(s.doc, 78, initial_indent="    ", subsequent_indent="    ")
    return text[:start] + "\n".join(lines) + "\n" + text[end:]


# --- driver --------------------------------------------------------------------------------------------

GENERATED: dict[Path, Callable[[], str]] = {
    VSCODE / "src" / "protocol.ts": ts_protocol,
    NVIM / "lua" / "opportune" / "protocol.lua": lua_protocol,
    VSCODE / "package.json": package_json,
    VSCODE / "src" / "serverSettings.ts": ts_settings,
    NVIM / "doc" / "opportune.txt": nvim_help,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 if a file is out of date"
    )
    args = parser.parse_args(argv)
    stale = []
    for path, make in GENERATED.items():
        wanted = make()
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if current == wanted:
            continue
        stale.append(path)
        if args.check:
            diff = difflib.unified_diff(
                current.splitlines(keepends=True),
                wanted.splitlines(keepends=True),
                f"{path.relative_to(ROOT)} (in the repository)",
                f"{path.relative_to(ROOT)} (generated)",
            )
            sys.stdout.writelines(diff)
        else:
            path.write_text(wanted, encoding="utf-8")
            print(f"wrote {path.relative_to(ROOT)}")
    if args.check and stale:
        print(f"\n{len(stale)} file(s) out of date: run `python scripts/sync_editors.py`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
