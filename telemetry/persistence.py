"""Persistence from events: what became of each accepted suggestion at each checkpoint, and survival curves.

The server writes a ``tracking`` row when it starts following an accepted suggestion (with the planned
checkpoints), then a ``measured`` or ``unknown`` row per checkpoint (``opportune.server.persistence``).
Here every planned checkpoint gets one status:

- ``measured``: the fraction and the characters still there;
- ``unknown``: the document closed, the server shut down, the suggestion was evicted, or -- with no row at
  all -- the server stopped before the checkpoint (a SIGKILL, a crash): once the checkpoint's time plus
  ``GRACE_S`` has passed, no row will come, and the reason is ``stopped``;
- ``pending``: its time has not come (plus the grace): the server may still measure it.  Left out.

Unknown is never counted as lost: rates are over measured checkpoints only.

Per completion, its *last checkpoint* is its measured row with the largest checkpoint; ``persisted_chars``
are the characters still there then and ``measured_chars`` the accepted characters of those completions.
The persistence rate is persisted_chars / measured_chars, and persisted CPO = CPO x persistence rate: the
accepted characters per opportunity that stayed (exactly persisted characters / opportunities when every
accepted suggestion has been measured; completions not measured yet are assumed to fare like the rest).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import pandas as pd

from opportune.telemetry.frames import EventFrames
from opportune.telemetry.schema import COMMON_FIELDS

# How long after a checkpoint's time a row may still arrive (the timer, then the store's flush interval);
# after it, a missing row means the server stopped.
GRACE_S = 120.0
STATUSES = ("measured", "unknown", "pending")


def checkpoint_table(frames: EventFrames, now: float | None = None, grace_s: float = GRACE_S) -> pd.DataFrame:
    """One row per (completion, planned checkpoint): ``completion_id``, ``checkpoint_s``, ``status``
    (measured, unknown, pending), ``reason``, ``accepted_chars``, ``kept_chars``, ``fraction`` and the
    ``ts`` and ``Common`` columns of the row it came from (the tracking row for a checkpoint with none)."""
    now = time.time() if now is None else now
    rows = frames["persistence"]
    columns = [
        "ts",
        *COMMON_FIELDS,
        "completion_id",
        "checkpoint_s",
        "status",
        "reason",
        "accepted_chars",
        "kept_chars",
        "fraction",
    ]
    if rows.empty:
        return pd.DataFrame({c: [] for c in columns})
    rows = rows.sort_values(["ts", "event_id"], kind="stable")
    results = rows[rows["status"].isin(["measured", "unknown"])].drop_duplicates(
        ["completion_id", "checkpoint_s"], keep="last"
    )
    tracking = rows[rows["status"] == "tracking"].drop_duplicates("completion_id", keep="last")
    planned = tracking.assign(
        checkpoint_s=tracking["checkpoints"].map(
            lambda text: [float(c) for c in str(text).split(",") if c.strip()]
        )
    ).explode("checkpoint_s")
    planned = planned.dropna(subset=["checkpoint_s"]).astype({"checkpoint_s": "float64"})
    key = ["completion_id", "checkpoint_s"]
    missing = planned.merge(results[key], on=key, how="left", indicator=True)
    missing = missing[missing["_merge"] == "left_only"].drop(columns="_merge")
    overdue = (missing["ts"] + missing["checkpoint_s"] + grace_s) < now
    missing = missing.assign(
        status=np.where(overdue, "unknown", "pending"),
        reason=np.where(overdue, "stopped", ""),
        kept_chars=0,
        fraction=np.nan,
    )
    table = pd.concat([results[columns], missing[columns]], ignore_index=True)
    return table.sort_values(key, kind="stable").reset_index(drop=True)


def last_measured(frames: EventFrames) -> pd.DataFrame:
    """Per completion with any measured checkpoint, that of its largest checkpoint (its Common columns,
    ``accepted_chars``, ``kept_chars``, ``checkpoint_s``)."""
    rows = frames["persistence"]
    measured = rows[rows["status"] == "measured"].sort_values(["checkpoint_s", "ts"], kind="stable")
    return measured.drop_duplicates("completion_id", keep="last").reset_index(drop=True)


def survival(
    frames: EventFrames, by: Sequence[str] = (), now: float | None = None, grace_s: float = GRACE_S
) -> pd.DataFrame:
    """Per group (columns ``by``) and checkpoint: counts of measured / unknown / pending checkpoints, the
    accepted and kept characters of the measured ones, and ``survival`` = kept / accepted characters."""
    return survival_of(checkpoint_table(frames, now, grace_s), by)


def survival_of(table: pd.DataFrame, by: Sequence[str] = ()) -> pd.DataFrame:
    """``survival`` from a ``checkpoint_table`` (which may carry derived grouping columns)."""
    keys = [*by, "checkpoint_s"]
    out_columns = [*keys, *STATUSES, "accepted_chars", "kept_chars", "survival"]
    if table.empty:
        return pd.DataFrame({c: [] for c in out_columns})
    counts = table.groupby([*keys, "status"], dropna=False).size().unstack("status", fill_value=0)
    for status in STATUSES:
        if status not in counts.columns:
            counts[status] = 0
    measured = table[table["status"] == "measured"]
    chars = measured.groupby(keys, dropna=False)[["accepted_chars", "kept_chars"]].sum()
    out = counts[list(STATUSES)].join(chars, how="left").fillna({"accepted_chars": 0, "kept_chars": 0})
    out = out.reset_index()
    accepted = out["accepted_chars"].astype("float64")
    out["survival"] = (out["kept_chars"] / accepted.where(accepted > 0)).astype("float64")
    return out[out_columns].astype({s: "int64" for s in STATUSES})
