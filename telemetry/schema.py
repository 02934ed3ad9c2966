"""The row schema shared by the store, the loaded frames and the export: an event as one flat row.

A row holds ``event_id`` and ``ts``, then the fields of ``Common`` (flattened, no prefix), then the
event's own fields in declaration order.  Booleans are stored as 0/1 integers.  Fields whose name ends
in ``_text`` carry source text and are written as NULL unless the user opted in (``store_text``).
The table of an event type is named after its ``kind``.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields
from typing import Any, Literal, Union

from opportune.telemetry.events import EVENT_TYPES, Common, Event

COMMON_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Common))
EVENT_TYPES_BY_KIND: dict[str, type[Event]] = {cls.kind: cls for cls in EVENT_TYPES}
KINDS: tuple[str, ...] = tuple(EVENT_TYPES_BY_KIND)
TEXT_SUFFIX = "_text"


@dataclass(frozen=True)
class Column:
    """One column of an event table."""

    name: str
    py_type: type  # str, int, float or bool (bool is stored as INTEGER)
    nullable: bool
    default: Any  # the value a row written by an older schema gets for this column

    @property
    def sql_type(self) -> type:
        """The type sqlite-utils should create the column with."""
        return int if self.py_type is bool else self.py_type


def _base_type(annotation: Any) -> tuple[type, bool]:
    """(python type, nullable) of a resolved annotation such as ``str | None`` or ``Literal['a']``."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return type(typing.get_args(annotation)[0]), False
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        inner, _ = _base_type(args[0])
        return inner, len(args) < len(typing.get_args(annotation))
    if isinstance(annotation, type) and annotation in (str, int, float, bool):
        return annotation, False
    raise TypeError(f"unsupported event field type {annotation!r}")


def _columns(cls: type[Event]) -> tuple[Column, ...]:
    hints = typing.get_type_hints(cls)
    cols = [
        Column("event_id", str, False, ""),
        Column("ts", float, False, 0.0),
    ]
    common_hints = typing.get_type_hints(Common)
    for f in fields(Common):
        typ, nullable = _base_type(common_hints[f.name])
        cols.append(Column(f.name, typ, nullable, "" if f.default is MISSING else f.default))
    for f in fields(cls):
        if f.name in ("common", "event_id", "ts"):
            continue
        typ, nullable = _base_type(hints[f.name])
        default = f.default if f.default is not MISSING else None if nullable else typ()
        cols.append(Column(f.name, typ, nullable, default))
    return tuple(cols)


COLUMNS: dict[str, tuple[Column, ...]] = {cls.kind: _columns(cls) for cls in EVENT_TYPES}


def columns_of(cls: type[Event]) -> tuple[Column, ...]:
    """The columns of the table for ``cls``, in row order."""
    return COLUMNS.get(cls.kind) or _columns(cls)


def column_names(kind: str) -> tuple[str, ...]:
    return tuple(c.name for c in COLUMNS[kind])


def is_text_field(name: str) -> bool:
    return name.endswith(TEXT_SUFFIX)


def _utf8(value: Any) -> Any:
    """SQLite stores UTF-8: a lone surrogate (valid JSON from a client) becomes U+FFFD instead of failing the
    whole batch."""
    if isinstance(value, str) and not value.isascii():
        return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return value


def event_to_row(event: Event, *, store_text: bool) -> dict[str, Any]:
    """Flatten ``event`` into a row; ``*_text`` fields become None unless ``store_text``."""
    row: dict[str, Any] = {"event_id": event.event_id, "ts": event.ts}
    common = event.common
    for name in COMMON_FIELDS:
        row[name] = _utf8(getattr(common, name))
    for f in fields(event):
        if f.name in ("common", "event_id", "ts"):
            continue
        value = getattr(event, f.name)
        if isinstance(value, bool):
            value = int(value)
        elif value is not None and not store_text and is_text_field(f.name):
            value = None
        row[f.name] = _utf8(value)
    return row


def row_to_event(kind: str, row: Mapping[str, Any]) -> Event:
    """Rebuild the event of ``kind`` from a flat row; columns an older schema lacked take their default."""
    try:
        cls = EVENT_TYPES_BY_KIND[kind]
    except KeyError:
        raise ValueError(f"unknown event kind {kind!r}") from None
    common_kwargs = {name: row[name] for name in COMMON_FIELDS if row.get(name) is not None}
    kwargs: dict[str, Any] = {"common": Common(**common_kwargs)}
    for col in columns_of(cls):
        if col.name in COMMON_FIELDS:
            continue
        value = row.get(col.name)
        if value is None:
            if col.nullable:
                kwargs[col.name] = None
            elif col.name in ("event_id", "ts"):
                raise ValueError(f"{kind} row without {col.name}")
            else:
                kwargs[col.name] = col.default
            continue
        kwargs[col.name] = col.py_type(value)
    return cls(**kwargs)


def parse_stages(raw: str | None) -> dict[str, float]:
    """The ``stages_ms`` JSON object of a response as stage -> milliseconds; {} when absent or malformed."""
    if not raw:
        return {}
    try:
        stages = json.loads(raw)
    except (TypeError, ValueError):
        return {}  # a malformed row should not sink a report or the metrics
    if not isinstance(stages, dict):
        return {}
    return {
        str(k): float(v) for k, v in stages.items() if isinstance(v, int | float) and not isinstance(v, bool)
    }
