"""Loaded events as one pandas DataFrame per event kind: the input of every analysis.

``EventFrames`` is built from stores (``opportune.telemetry.store.open_events``), from an export
(``opportune.telemetry.export.load_export``), from event objects (``EventFrames.from_events``, used by tests and
the offline harness) or from simulated data (``opportune.telemetry.simulate``).  Every kind is present, with the
columns of ``opportune.telemetry.schema`` in order, whatever the source lacked; each ``event_id`` appears once.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from opportune.telemetry.events import UNKNOWN_MODEL, Event
from opportune.telemetry.schema import COLUMNS, KINDS, column_names, event_to_row, row_to_event


def _normalise(kind: str, df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with exactly the schema's columns, in order, with their types; missing columns get defaults.

    Works on numpy arrays column by column: this runs on every load, and pandas' per-call overhead
    dominated with small frames.
    """
    n = len(df)
    out: dict[str, np.ndarray] = {}
    for col in COLUMNS[kind]:
        if col.name not in df.columns:
            if col.py_type is float:
                out[col.name] = np.full(n, np.nan if col.default is None else col.default, dtype="float64")
            elif col.py_type in (int, bool):
                out[col.name] = np.full(n, int(col.default or 0), dtype="int64")
            else:
                out[col.name] = np.full(n, col.default, dtype=object)
            continue
        series = df[col.name]
        if col.py_type in (int, bool):
            if series.dtype.kind in "iub":
                out[col.name] = series.to_numpy(dtype="int64")
            else:
                numbers = pd.to_numeric(series).to_numpy(dtype="float64", na_value=np.nan)
                out[col.name] = np.where(np.isnan(numbers), int(col.default or 0), numbers).astype("int64")
        elif col.py_type is float:
            numbers = pd.to_numeric(series).to_numpy(dtype="float64", na_value=np.nan)
            if not col.nullable:
                numbers = np.where(np.isnan(numbers), col.default, numbers)
            out[col.name] = numbers
        else:
            values = series.to_numpy(dtype=object)
            missing = pd.isna(values)
            if missing.any():
                values = values.copy()
                values[missing] = None if col.nullable else col.default
            out[col.name] = values
    return pd.DataFrame(out)


def json_safe(value: Any) -> Any:
    """Plain Python values for JSON, recursively: NaN (pandas' missing) and infinities become None,
    numpy scalars become Python ones, tuples become lists."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass(frozen=True)
class EventFrames:
    """One DataFrame per event kind (``tables[kind]``), columns as in ``opportune.telemetry.schema``."""

    tables: Mapping[str, pd.DataFrame]

    # --- construction ---

    @classmethod
    def from_frames(cls, tables: Mapping[str, pd.DataFrame]) -> EventFrames:
        """Normalise frames (schema columns, types) and keep each event_id once (the first seen)."""
        normalised: dict[str, pd.DataFrame] = {}
        for kind in KINDS:
            df = tables.get(kind)
            if df is None:
                df = pd.DataFrame({name: [] for name in column_names(kind)})
            df = _normalise(kind, df)
            normalised[kind] = df.drop_duplicates("event_id", keep="first").reset_index(drop=True)
        unknown = set(tables) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown event kinds: {', '.join(sorted(unknown))}")
        return cls(normalised)

    @classmethod
    def from_rows(cls, tables: Mapping[str, tuple[Sequence[str], Sequence[Sequence[Any]]]]) -> EventFrames:
        """From (column names, row tuples) per kind, as read from SQLite."""
        return cls.from_frames(
            {
                kind: pd.DataFrame.from_records(list(rows), columns=list(cols))
                for kind, (cols, rows) in tables.items()
            }
        )

    @classmethod
    def from_records(cls, records: Mapping[str, Iterable[Mapping[str, Any]]]) -> EventFrames:
        """From flat row dicts per kind (an export, a test)."""
        return cls.from_frames(
            {kind: pd.DataFrame.from_records(list(rows)) for kind, rows in records.items()}
        )

    @classmethod
    def from_events(cls, events: Iterable[Event], *, store_text: bool = False) -> EventFrames:
        """From event objects, flattened as the store would write them."""
        by_kind: dict[str, list[dict[str, Any]]] = {}
        for event in events:
            by_kind.setdefault(event.kind, []).append(event_to_row(event, store_text=store_text))
        return cls.from_records(by_kind)

    @classmethod
    def merge(cls, parts: Sequence[EventFrames]) -> EventFrames:
        """Several stores as one: rows concatenated, each event_id kept once."""
        if len(parts) == 1:
            return parts[0]
        return cls.from_frames(
            {kind: pd.concat([p.tables[kind] for p in parts], ignore_index=True) for kind in KINDS}
        )

    # --- access ---

    def __getitem__(self, kind: str) -> pd.DataFrame:
        return self.tables[kind]

    @property
    def opportunities(self) -> pd.DataFrame:
        return self.tables["opportunity"]

    @property
    def attempts(self) -> pd.DataFrame:
        return self.tables["attempt"]

    @property
    def responses(self) -> pd.DataFrame:
        return self.tables["response"]

    @property
    def shown(self) -> pd.DataFrame:
        return self.tables["shown"]

    @property
    def outcomes(self) -> pd.DataFrame:
        return self.tables["outcome"]

    @property
    def skips(self) -> pd.DataFrame:
        return self.tables["skip"]

    @property
    def edits(self) -> pd.DataFrame:
        return self.tables["edit"]

    def __len__(self) -> int:
        return sum(len(df) for df in self.tables.values())

    def counts(self) -> dict[str, int]:
        """Events per kind."""
        return {kind: len(df) for kind, df in self.tables.items()}

    def installs(self) -> set[str]:
        return {str(i) for df in self.tables.values() for i in df["install_id"].unique()}

    def experiments(self) -> list[str]:
        """Names of the experiments seen, sorted (the empty name, no experiment, left out)."""
        names = {str(e) for df in self.tables.values() for e in df["experiment"].unique()}
        return sorted(n for n in names if n)

    def filter(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        experiment: str | None = None,
    ) -> EventFrames:
        """Events with ``since <= ts < until`` and, if given, of one experiment."""
        tables: dict[str, pd.DataFrame] = {}
        for kind, df in self.tables.items():
            mask = pd.Series(True, index=df.index)
            if since is not None:
                mask &= df["ts"] >= since
            if until is not None:
                mask &= df["ts"] < until
            if experiment is not None:
                mask &= df["experiment"] == experiment
            tables[kind] = df[mask].reset_index(drop=True)
        return EventFrames(tables)

    def known_models(self) -> EventFrames:
        """Without the rows recorded before the model was known (``events.UNKNOWN_MODEL``): a per-model row
        made of them would name no model and mix the funnel of whichever model came next."""
        return EventFrames(
            {
                kind: df[df["model_id"] != UNKNOWN_MODEL].reset_index(drop=True)
                for kind, df in self.tables.items()
            }
        )

    def iter_records(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """(kind, flat row with plain Python values) for every event, kind by kind, in time order."""
        for kind in KINDS:
            df = self.tables[kind].sort_values(["ts", "event_id"], kind="stable")
            names = list(df.columns)
            for values in df.itertuples(index=False, name=None):
                yield kind, {name: json_safe(v) for name, v in zip(names, values, strict=True)}

    def to_events(self) -> list[Event]:
        return [row_to_event(kind, row) for kind, row in self.iter_records()]
