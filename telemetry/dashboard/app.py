"""``opportune dashboard``: the telemetry as a local web page, or as one HTML file for a review.

    opportune dashboard [--db PATH ...] [--port 8765] [--host 127.0.0.1] [--experiment NAME]
                        [--from DATE] [--to DATE] [--language L] [--model M] [--budget-ms 300]
                        [--export report.html]

Serving: ``opportune.telemetry.dashboard.web`` on 127.0.0.1 unless told otherwise (with a loud warning then: the
page shows arm names, languages and counts), read-only, until Ctrl-C.  Exporting: one self-contained
HTML file, or one line on stderr and status 2 when there is nothing to export (a missing, corrupt or
empty store, a filter value not in the stores).  The filters given here go through the same validation
as the page's query parameters.

The server's CLI wires this module as its ``dashboard`` subcommand: ``add_arguments(parser)`` then
``run(args)``; the VS Code extension runs ``opportune dashboard --port N [--db PATH]`` and waits for
``http://127.0.0.1:N/``.
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opportune.telemetry.dashboard.data import Query

# Constants only at import time: the CLI imports this module on every `opportune` start, `serve` too, so
# pandas' analysis path, http.server and the metrics client load when the dashboard runs, not before.
DEFAULT_PORT = 8765  # the VS Code extension's default (opportune.dashboard.port)
DEFAULT_HOST = "127.0.0.1"
DEFAULT_BUDGET_MS = 300


# --- arguments -----------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``dashboard`` options to ``parser`` (a subcommand parser of the CLI)."""
    parser.add_argument(
        "--db",
        action="append",
        type=Path,
        metavar="PATH",
        help="telemetry store; repeat to merge several (one per install). Default: the user's store",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"port to serve on (default {DEFAULT_PORT}; 0: any free)",
    )
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help="address to bind (default 127.0.0.1; anything else exposes the telemetry to the network)",
    )
    parser.add_argument(
        "--export",
        type=Path,
        metavar="FILE",
        help="write the dashboard to one self-contained HTML file and exit",
    )
    parser.add_argument("--experiment", metavar="NAME", help="the experiment to show (default: the latest)")
    parser.add_argument(
        "--from", dest="first_day", metavar="DATE", help="first day to include (UTC), e.g. 2025-01-31"
    )
    parser.add_argument("--to", dest="last_day", metavar="DATE", help="last day to include (UTC)")
    parser.add_argument("--language", help="only this language")
    parser.add_argument("--model", help="only this model id")
    parser.add_argument(
        "--budget-ms",
        type=int,
        default=DEFAULT_BUDGET_MS,
        metavar="MS",
        help=f"latency budget drawn on the latency chart (default {DEFAULT_BUDGET_MS})",
    )


def cli_params(args: argparse.Namespace) -> dict[str, list[str]]:
    """The command line's filters as query parameters, to go through the same validation as the page's."""
    params: dict[str, list[str]] = {}
    for name, attribute in (
        ("from", "first_day"),
        ("to", "last_day"),
        ("language", "language"),
        ("model", "model"),
        ("experiment", "experiment"),
    ):
        value = getattr(args, attribute, None)
        if value:
            params[name] = [str(value)]
    budget = getattr(args, "budget_ms", None)
    if budget is not None and budget != DEFAULT_BUDGET_MS:
        params["budget"] = [str(budget)]
    return params


def run(args: argparse.Namespace) -> int:
    """Run ``opportune dashboard``: serve until interrupted, or export; 0 on success, 2 on an error."""
    from opportune.telemetry.dashboard.data import QueryError
    from opportune.telemetry.dashboard.web import DashboardServer
    from opportune.telemetry.metrics import is_loopback
    from opportune.telemetry.store import store_paths

    paths = store_paths(args.db)
    if args.export:
        return export(paths, cli_params(args), args.export)
    try:
        base = base_query(cli_params(args))
    except QueryError as exc:
        print(f"opportune dashboard: error: {exc}", file=sys.stderr)
        return 2
    try:
        server = DashboardServer(paths, base=base, host=args.host, port=args.port)
    except OSError as exc:
        print(
            f"opportune dashboard: error: cannot listen on {args.host}:{args.port} ({exc.strerror or exc})",
            file=sys.stderr,
        )
        return 2
    if not is_loopback(args.host):
        warning = (
            f"WARNING: THE DASHBOARD IS LISTENING ON {args.host}, NOT ON LOOPBACK: anyone who can reach this "
            "address can read the telemetry (arm names, languages, counts). Use --host 127.0.0.1 unless you mean it."
        )
        print(warning, file=sys.stderr, flush=True)
    threading.Thread(target=server.app.warm, name="opportune-dashboard-warm", daemon=True).start()
    print(
        f"Opportune dashboard on {server.url} (reading {', '.join(map(str, paths))}); Ctrl-C to stop",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


def export(paths: Sequence[Path], params: Mapping[str, list[str]], target: Path) -> int:
    """Write the dashboard of ``paths`` to ``target``; a one-line error and status 2 when it cannot."""
    from opportune.telemetry.dashboard.data import Choices, QueryError, build_view, parse_query
    from opportune.telemetry.dashboard.page import render_page
    from opportune.telemetry.store import StoreError, open_events

    try:
        frames = open_events(paths)
        choices = Choices.of(frames)
        query = parse_query(params, choices)
    except (StoreError, QueryError) as exc:
        print(f"opportune dashboard: error: {exc}", file=sys.stderr)
        return 2
    view = build_view(frames, query, stores=paths, choices=choices)
    if not view.has_data:
        reason = " ".join(m.text for m in view.messages if m.level == "error") or (
            "no events in " + ", ".join(map(str, paths))
            if len(frames) == 0
            else "no events match the filters"
        )
        print(f"opportune dashboard: error: nothing to export: {reason}", file=sys.stderr)
        return 2
    for message in view.messages:  # what the page says above the charts, for the person exporting
        print(f"opportune dashboard: note: {message.text}", file=sys.stderr)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(render_page(view, interactive=False), encoding="utf-8")
    except OSError as exc:
        print(f"opportune dashboard: error: cannot write {target} ({exc.strerror or exc})", file=sys.stderr)
        return 2
    print(f"wrote {target}")
    return 0


def base_query(params: Mapping[str, list[str]]) -> Query:
    """The command line's filters for the server: dates and budget validated now; the names are kept as
    given, because the store may not exist yet (a name absent from the data shows an empty page that says so)."""
    from opportune.telemetry.dashboard.data import Choices, parse_query

    names = {k: v for k, v in params.items() if k in ("language", "model", "experiment")}
    query = parse_query({k: v for k, v in params.items() if k not in names}, Choices())
    return replace(
        query,
        language=names["language"][0] if "language" in names else None,
        model=names["model"][0] if "model" in names else None,
        experiment=names["experiment"][0] if "experiment" in names else None,
    )
