"""``opportune export``: telemetry events as rows for a warehouse (NDJSON or Parquet), and the way back.

    opportune export --db PATH [--db PATH ...] [--since WHEN] --format ndjson|parquet --out PATH
    opportune export --format dataset --out PATH   (opt-in text only; see opportune.telemetry.dataset)

Several stores are merged first, each event once.  One row per event; ``kind`` says which event it is.

Schema (version 2: version 1 plus the next-edit kinds).  Every row:

    kind            string   opportunity | edit | skip | attempt | response | shown | outcome | persistence |
                             edit_opportunity | next_edit | next_edit_outcome
    event_id        string   unique id of the event (hex)
    ts              double   Unix time in seconds, UTC
    install_id      string   the installation (the experiment's randomisation unit)
    session_id      string   one server run
    experiment      string   experiment name, "" when none
    arm             string   experiment arm, "" when none
    arm_digest      string   digest of the arm's effective settings
    model_id        string   the model that served the session
    language        string   language id of the document
    client          string   editor name and version

Then the fields of the row's kind (NDJSON rows carry only their own kind's fields; a Parquet file has
every column, null where the kind lacks it):

    edit         document_hash string, edit_kind string, chars_inserted int64, chars_deleted int64
    opportunity  opportunity_id string, document_hash string (salted hash, never a path),
                 edit_kind string (insert|delete|replace|newline|bulk), trigger_kind string (automatic|invoked)
    skip         opportunity_id string, rule string (the trigger rule that decided not to attempt)
    attempt      attempt_id string, opportunity_id string, source string (model|cache), prompt_tokens int64,
                 reused_tokens int64, context_parts string (comma-separated), prompt_text string|null
    response     attempt_id string, latency_first_ms double|null, latency_total_ms double,
                 generated_tokens int64, stop_reason string, chars int64, lines int64,
                 loss_reason string|null (deadline|cancelled|superseded|empty|error|skipped; null: a
                 suggestion was returned), stages_ms string (JSON object stage -> ms),
                 completion_id string|null, completion_tokens int64, prompt_tokens int64,
                 reused_tokens int64, completion_text string|null, prompt_text string|null
    shown        completion_id string, attempt_id string, inferred bool
    outcome      completion_id string, outcome string (accepted|partial|rejected), accepted_chars int64,
                 accepted_tokens int64, reason string, inferred bool, keystrokes_saved int64 (characters
                 not typed minus one key per accept or partial accept)
    persistence  completion_id string, status string (tracking|measured|unknown), checkpoint_s double
                 (seconds after the accept; 0 on tracking rows), checkpoints string (the planned ones,
                 comma-separated, on tracking rows), accepted_chars int64, kept_chars int64, fraction
                 double|null (of the accepted characters still there; measured rows), reason string
                 (unknown rows: closed|shutdown|evicted), kept_text string|null, prefix_text string|null,
                 suffix_text string|null
    edit_opportunity  edit_opportunity_id string, document_hash string, change_kind string (rename,
                 rename_function, rename_parameter, add_parameter, remove_parameter, reorder_parameters,
                 change_parameters), follow_ups int64, files int64
    next_edit    next_edit_id string, edit_opportunity_id string, source string (rule|model),
                 edit_kind string (rename|callee|arguments|parameter_use), chars_changed int64,
                 latency_ms double, same_file bool, snippet bool
    next_edit_outcome  next_edit_id string, outcome string (accepted|rejected), chars_changed int64,
                 reason string, inferred bool

``*_text`` columns are null unless the store was written with ``store_text`` on.  Parquet needs pyarrow
(``pip install pyarrow``); NDJSON needs nothing.  ``load_export``/``import_events`` read either format
back, so an exported file gives the same report as the stores it came from.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Literal, TextIO

from opportune.telemetry.events import Event
from opportune.telemetry.frames import EventFrames
from opportune.telemetry.schema import COLUMNS, KINDS, row_to_event
from opportune.telemetry.store import StoreError, open_events, store_paths

Format = Literal["ndjson", "parquet", "dataset"]
FORMATS: tuple[Format, ...] = ("ndjson", "parquet", "dataset")
EXPORT_SCHEMA_VERSION = 2
PYARROW_MISSING = "parquet export needs pyarrow: pip install pyarrow (or use --format ndjson)"


class ExportError(Exception):
    """An export or import that cannot be done; the message is one line for people."""


def _bool_columns() -> set[str]:
    return {c.name for cols in COLUMNS.values() for c in cols if c.py_type is bool}


def export_rows(frames: EventFrames) -> Iterator[dict[str, Any]]:
    """One dict per event: ``kind`` first, then its columns; booleans as booleans."""
    bools = _bool_columns()
    for kind, row in frames.iter_records():
        yield {"kind": kind, **{k: (bool(v) if k in bools and v is not None else v) for k, v in row.items()}}


def write_ndjson(frames: EventFrames, out: IO[str]) -> int:
    """Write NDJSON to a text stream; return the number of rows."""
    n = 0
    for row in export_rows(frames):
        out.write(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n")
        n += 1
    return n


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise ExportError(PYARROW_MISSING) from None
    return pyarrow


def parquet_schema() -> Any:
    """The Parquet schema: ``kind`` then the union of every kind's columns, all nullable."""
    pa = _pyarrow()
    types = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_()}
    fields: dict[str, Any] = {"kind": pa.field("kind", pa.string(), nullable=False)}
    for kind in KINDS:
        for col in COLUMNS[kind]:
            fields.setdefault(col.name, pa.field(col.name, types[col.py_type]))
    return pa.schema(list(fields.values()), metadata={"opportune_export_schema": str(EXPORT_SCHEMA_VERSION)})


def write_parquet(frames: EventFrames, path: Path) -> int:
    pa = _pyarrow()
    schema = parquet_schema()
    rows = list(export_rows(frames))
    table = pa.Table.from_pylist(rows, schema=schema)
    pa.parquet.write_table(table, str(path))
    return len(rows)


def export_events(frames: EventFrames, out: Path | str, fmt: Format = "ndjson") -> int:
    """Write ``frames`` to ``out`` (``-`` is stdout, NDJSON only); return the number of rows."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; choose ndjson, parquet or dataset")
    if fmt == "dataset":
        from opportune.telemetry.dataset import DatasetUnavailable, dataset_records, write_dataset
        from opportune.telemetry.redact import RedactionUnavailable

        try:
            records = list(dataset_records(frames))  # all checked and redacted before a byte is written
        except (DatasetUnavailable, RedactionUnavailable) as exc:
            raise ExportError(str(exc)) from None
        if str(out) == "-":
            return write_dataset(records, sys.stdout)
        with Path(out).open("w", encoding="utf-8") as f:
            return write_dataset(records, f)
    if str(out) == "-":
        if fmt != "ndjson":
            raise ExportError("only ndjson can be written to stdout")
        return write_ndjson(frames, sys.stdout)
    path = Path(out)
    if fmt == "parquet":
        return write_parquet(frames, path)
    with path.open("w", encoding="utf-8") as f:
        return write_ndjson(frames, f)


# --- import --------------------------------------------------------------------------------------------


def _is_parquet(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(4) == b"PAR1"


def _read_rows(path: Path) -> Iterator[dict[str, Any]]:
    if not path.is_file():
        raise ExportError(f"no export file at {path}")
    if _is_parquet(path):
        pa = _pyarrow()
        yield from pa.parquet.read_table(str(path)).to_pylist()
        return
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise ExportError(f"{path}:{number}: not JSON ({exc})") from None
            if not isinstance(row, dict) or row.get("kind") not in KINDS:
                raise ExportError(f"{path}:{number}: not an event row (missing or unknown 'kind')")
            yield row


def _split(path: Path) -> dict[str, list[dict[str, Any]]]:
    by_kind: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
    for row in _read_rows(path):
        kind = row.pop("kind")
        if kind not in by_kind:
            raise ExportError(f"{path}: unknown event kind {kind!r}")
        names = COLUMNS[kind]
        by_kind[kind].append({c.name: row.get(c.name) for c in names})
    return by_kind


def load_export(path: Path | str) -> EventFrames:
    """An export (NDJSON or Parquet, detected from the file) loaded for analysis."""
    return EventFrames.from_records(_split(Path(path)))


def import_events(path: Path | str) -> list[Event]:
    """An export read back as event objects."""
    return [row_to_event(kind, row) for kind, rows in _split(Path(path)).items() for row in rows]


# --- command line --------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``export`` options to ``parser`` (a subcommand parser of the CLI)."""
    parser.add_argument(
        "--db",
        action="append",
        type=Path,
        metavar="PATH",
        help="telemetry store; repeat to merge several. Default: the user's store",
    )
    parser.add_argument("--since", metavar="WHEN", help="only events since an ISO date or an age (7d, 24h)")
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="ndjson",
        help="output format (default: ndjson); dataset: prompts, suggestions and the code kept, redacted "
        "(needs telemetry.store_text = true)",
    )
    parser.add_argument("--out", required=True, metavar="PATH", help="output file; '-' for stdout (ndjson)")


def run(args: argparse.Namespace, err: TextIO | None = None) -> int:
    """Run ``opportune export`` with parsed arguments; 0 on success, 2 on a user-facing error."""
    from opportune.telemetry.cpo import parse_since

    err = err or sys.stderr
    try:
        since = parse_since(args.since) if args.since else None
        frames = open_events(store_paths(args.db), since=since)
        n = export_events(frames, args.out, args.format)
    except BrokenPipeError:
        # The reader of stdout (``| head``) went away: not an error of ours.  Point stdout at devnull
        # so that the interpreter's final flush does not complain either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (StoreError, ExportError, ValueError, OSError) as exc:
        print(f"opportune export: error: {exc}", file=err)
        return 2
    if str(args.out) != "-":
        what = "records" if args.format == "dataset" else "events"
        print(f"exported {n:,} {what} to {args.out}", file=err)
    return 0
