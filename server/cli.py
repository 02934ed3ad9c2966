"""The `opportune` command: argument parsing only; each subcommand calls into the modules that do the work.

Start-up is part of the product (an editor starts `opportune serve`, a script runs `opportune --version`):
this module imports only what parsing needs, and each subcommand imports its own modules when it runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from opportune.server import __version__

# Not `from typing import TYPE_CHECKING`: typing costs as much to import as the rest of --version.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def _model_overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    model: dict[str, Any] = {}
    if getattr(args, "model", None):
        model["path"] = str(args.model)
    if getattr(args, "backend", None):
        model["backend"] = args.backend
    if getattr(args, "threads", None):
        model["threads"] = args.threads
    if model:
        overrides["model"] = model
    telemetry: dict[str, Any] = {}
    if getattr(args, "db", None):
        telemetry["db"] = str(args.db)
    if getattr(args, "metrics_port", None):
        telemetry["metrics_port"] = args.metrics_port
    if telemetry:
        overrides["telemetry"] = telemetry
    return overrides


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, help="a GGUF file (default: the embedded Gemma 3 270M)")
    p.add_argument(
        "--backend", choices=["llama", "fake", "openai", "llama-server"], help="fake is for tests only"
    )
    p.add_argument("--threads", type=int, help="CPU threads for the model (default: all cores)")
    p.add_argument("--config", type=Path, help="opportune.toml (default: found from the current folder)")
    p.add_argument("--db", type=Path, help="telemetry SQLite file")


def cmd_serve(args: argparse.Namespace) -> int:
    from opportune.server.lsp import build_server
    from opportune.server.session import start_session

    overrides = _model_overrides(args)

    def factory(options: Any, **kwargs: Any) -> Any:
        return start_session(options, overrides=overrides, config_path=args.config, **kwargs)

    server = build_server(factory, max_message_bytes=int(args.max_message_mb * 1024 * 1024))
    if args.tcp:
        host, _, port = args.tcp.rpartition(":")
        server.start_tcp(host or "127.0.0.1", int(port))
    else:
        server.start_io()
    return server.exit_code


def cmd_complete(args: argparse.Namespace) -> int:
    from opportune.server.backends.base import BackendError
    from opportune.server.oneshot import complete_file

    try:
        text = complete_file(
            args.file, args.line, args.col, overrides=_model_overrides(args), config_path=args.config
        )
    except BackendError as e:
        print(f"opportune: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"opportune: cannot read {args.file}: {e.strerror}", file=sys.stderr)
        return 2
    print(text)
    return 0 if text else 1


def cmd_demo(args: argparse.Namespace) -> int:
    import asyncio

    from opportune.server.backends.base import BackendError
    from opportune.server.demo import run_demo

    try:
        return asyncio.run(run_demo(args, _model_overrides(args)))
    except BackendError as e:
        print(f"opportune: {e}", file=sys.stderr)
        return 2


def cmd_model(args: argparse.Namespace) -> int:
    from opportune.server.backends.base import BackendError
    from opportune.server.models import default_model_path, resolve_model_path

    try:
        path = resolve_model_path(str(args.model) if args.model else "")
    except BackendError as e:
        print(f"opportune: {e}", file=sys.stderr)
        return 2
    print(path if args.model else default_model_path())
    return 0


def cmd_trust(args: argparse.Namespace) -> int:
    from opportune.server import trust
    from opportune.server.config import read_toml

    if args.list:
        for name, digest in trust.trusted_files().items():
            print(f"{digest[:12]}  {name}")
        return 0
    path: Path | None = args.path
    if path is None:
        folder = Path.cwd().resolve()
        path = next(
            (p / "opportune.toml" for p in (folder, *folder.parents) if (p / "opportune.toml").is_file()),
            None,
        )
        if path is None:
            print("opportune trust: no opportune.toml in this folder or its parents", file=sys.stderr)
            return 2
    if path.is_dir():
        path = path / "opportune.toml"
    if args.forget:
        print(f"{'no longer trusted' if trust.forget(path) else 'was not trusted'}: {path.resolve()}")
        return 0
    problems: list[str] = []
    data, content = read_toml(path, problems)
    if content is None:
        print(f"opportune trust: {problems[0] if problems else path}", file=sys.stderr)
        return 2
    digest = trust.trust(path)
    keys = trust.filter_untrusted(data).refused
    print(f"trusted {path.resolve()} (sha256 {digest[:12]}); changing the file needs trusting again")
    if keys:
        print(f"it may now set: {', '.join(keys)}")
    for problem in problems:
        print(f"note: {problem}", file=sys.stderr)
    return 0


# Subcommands whose arguments and work live in another module: (module, name, help).  The module is
# imported only when its subcommand runs (or its --help is asked for): the analysis modules pull in
# pandas and scipy, which `opportune serve` and `opportune --version` must not pay for.
DELEGATED: tuple[tuple[str, str, str], ...] = (
    ("opportune.telemetry.report", "report", "CPO and its factors from the telemetry store"),
    ("opportune.telemetry.export", "export", "export telemetry events (ndjson, parquet)"),
    ("opportune.server.eval.cli", "eval", "offline evaluation of configurations on real code"),
    ("opportune.server.eval.nextedit", "eval-next-edit", "offline evaluation of next-edit suggestions"),
    ("opportune.telemetry.dashboard.app", "dashboard", "a local web dashboard of the telemetry"),
)


def _delegate(module: str, name: str, help_text: str, sub: Any, load: bool) -> None:
    """Add subcommand ``name``; with ``load``, import ``module`` for its arguments and its ``run``."""
    p = sub.add_parser(name, help=help_text)
    if not load:
        return
    try:
        mod = importlib.import_module(module)
    except ImportError as e:  # a part not installed must not break the other commands
        p.set_defaults(
            func=lambda _a, e=e: print(f"opportune {name}: unavailable ({e})", file=sys.stderr) or 2
        )
        return
    mod.add_arguments(p)
    p.set_defaults(func=mod.run)


def _command(argv: list[str]) -> str | None:
    """The subcommand named in ``argv`` (the first word that is not an option), if any."""
    return next((word for word in argv if not word.startswith("-")), None)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; a delegated subcommand gets its arguments only when it is ``command``."""
    parser = argparse.ArgumentParser(prog="opportune", description=__doc__)
    parser.add_argument("--version", action="version", version=f"opportune {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages to stderr")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="the language server on stdio")
    _add_model_args(p)
    p.add_argument("--tcp", metavar="HOST:PORT", help="listen on TCP instead of stdio (debugging)")
    p.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on 127.0.0.1:PORT")
    p.add_argument(
        "--max-message-mb",
        type=float,
        default=64,
        help="largest LSP message accepted; a larger one is refused unread and the stream resynchronised (64)",
    )
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("complete", help="print one completion for a position in a file")
    p.add_argument("file", type=Path)
    p.add_argument("--line", type=int, required=True, help="1-based line")
    p.add_argument("--col", type=int, required=True, help="1-based column (characters)")
    _add_model_args(p)
    p.set_defaults(func=cmd_complete)

    p = sub.add_parser("demo", help="replay a real source file as if typed and show the ghost text and CPO")
    p.add_argument("file", type=Path, nargs="?", help="default: a module of Python's standard library")
    p.add_argument("--chars", type=int, default=400, help="how many characters to type (default 400)")
    p.add_argument("--speed", type=float, default=6.5, help="keys per second (default 6.5)")
    p.add_argument("--seed", type=int, default=0)
    _add_model_args(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "model", help="assemble and verify the embedded model (or check --model) and print its path"
    )
    p.add_argument("--model", type=Path)
    p.set_defaults(func=cmd_model)

    p = sub.add_parser(
        "trust",
        help="trust a workspace opportune.toml: let it set the backend, endpoint, key variable, listeners, "
        "model path and telemetry store",
    )
    p.add_argument("path", type=Path, nargs="?", help="default: opportune.toml here or in a parent folder")
    p.add_argument("--forget", action="store_true", help="withdraw trust")
    p.add_argument("--list", action="store_true", help="list the trusted files")
    p.set_defaults(func=cmd_trust)

    for module, name, help_text in DELEGATED:
        _delegate(module, name, help_text, sub, load=name == command)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(_command(argv)).parse_args(argv)
    import logging

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # pygls logs every message at INFO, and a routine race (a cancel after the answer) as a warning.
    logging.getLogger("pygls").setLevel(logging.DEBUG if args.verbose else logging.ERROR)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
