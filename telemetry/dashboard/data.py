"""What the dashboard shows, computed from events: validated filters in, one ``View`` out.

The stores are read through ``opportune.telemetry.store.open_events`` (read-only, merged, each event once) and
every filter is applied to the loaded frames in pandas: a query parameter never reaches SQL.  Filter
values are checked against the values present in the data (``Choices``) before use, so a parameter
outside that whitelist is refused with a ``QueryError`` rather than matched against anything.

Intervals follow ``opportune.telemetry.experiments``: the randomisation unit is the install, so CPO per day and
per language is a ratio of means over the installs active in that cell, with a delta-method interval
(``ratio_of_means``, descriptive) -- never events treated as independent.  The verdict and the lifts are
the always-valid analysis (``PeekingPlan``): people look at this page every day, so each day's look is
tested at its own share of alpha; ``View.interval_note`` says so on the page.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from opportune.telemetry.cpo import COUNT_COLUMNS, Funnel, funnel_counts
from opportune.telemetry.experiments import (
    AnalysisError,
    Estimate,
    ExperimentAnalysis,
    PeekingPlan,
    analyse,
    ratio_of_means,
)
from opportune.telemetry.frames import EventFrames
from opportune.telemetry.numbers import percentile
from opportune.telemetry.persistence import checkpoint_table
from opportune.telemetry.store import open_events

Z95 = 1.959963984540054  # the normal quantile of a two-sided 95% interval
DEFAULT_BUDGET_MS = 300.0
MAX_BUDGET_MS = 60_000
# Query parameters the page understands; anything else is refused.
PARAMS: tuple[str, ...] = ("from", "to", "language", "model", "experiment", "budget")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_INTEGER = re.compile(r"^\d{1,6}$")
NO_ARM = "(no arm)"

# A colour per arm, in arm order (control first), the same in every chart.  Colour-blind-safe hues
# (after Okabe-Ito), none of them the green or red that the lift charts use for better and worse.
ARM_COLOURS: tuple[str, ...] = ("#3a6fb0", "#e08a1e", "#8a5cc2", "#1f9e99", "#c9508f", "#7f6a3b", "#5c6670")


class QueryError(ValueError):
    """A query parameter was refused; the message says which and what is allowed, in one line."""


# --- filters -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    """The filters of one page: all optional, validated by ``parse_query``."""

    first_day: date | None = None  # inclusive, UTC
    last_day: date | None = None  # inclusive, UTC
    language: str | None = None
    model: str | None = None
    experiment: str | None = None  # None: the most recent experiment in the data
    budget_ms: float = DEFAULT_BUDGET_MS

    def to_params(self) -> dict[str, str]:
        """The query parameters that reproduce this query (defaults left out)."""
        params: dict[str, str] = {}
        if self.first_day:
            params["from"] = self.first_day.isoformat()
        if self.last_day:
            params["to"] = self.last_day.isoformat()
        if self.language:
            params["language"] = self.language
        if self.model:
            params["model"] = self.model
        if self.experiment:
            params["experiment"] = self.experiment
        if self.budget_ms != DEFAULT_BUDGET_MS:
            params["budget"] = str(int(self.budget_ms))
        return params

    def describe(self) -> str:
        """The filters in words, for the page header and the export."""
        parts: list[str] = []
        if self.first_day or self.last_day:
            parts.append(
                f"{self.first_day.isoformat() if self.first_day else '…'} to "
                f"{self.last_day.isoformat() if self.last_day else '…'} (UTC)"
            )
        if self.language:
            parts.append(f"language {self.language}")
        if self.model:
            parts.append(f"model {self.model}")
        return ", ".join(parts) or "all events"


@dataclass(frozen=True)
class Choices:
    """The values present in the loaded events: the whitelist every filter is checked against."""

    languages: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    experiments: tuple[str, ...] = ()
    first_day: date | None = None
    last_day: date | None = None

    @classmethod
    def of(cls, frames: EventFrames) -> Choices:
        def values(column: str) -> tuple[str, ...]:
            seen: set[str] = set()
            for df in frames.tables.values():
                seen.update(str(v) for v in df[column].dropna().unique())
            return tuple(sorted(v for v in seen if v))

        stamps = [df["ts"] for df in frames.tables.values() if len(df)]
        first = last = None
        if stamps:
            ts = pd.concat(stamps)
            first, last = _day_of(float(ts.min())), _day_of(float(ts.max()))
        return cls(values("language"), values("model_id"), tuple(frames.experiments()), first, last)


def _day_of(ts: float) -> date:
    return datetime.fromtimestamp(ts, UTC).date()


def _day_start(day: date) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()


def _shown(value: str) -> str:
    """A refused value for an error message: quoted and cut short (the page escapes it)."""
    return repr(value if len(value) <= 40 else value[:40] + "…")


def _one_of(name: str, value: str, allowed: Sequence[str]) -> str:
    if value not in allowed:
        listed = ", ".join(allowed[:12]) + (", …" if len(allowed) > 12 else "")
        raise QueryError(
            f"{name} {_shown(value)} is not in these stores; choose one of: {listed or '(none recorded)'}"
        )
    return value


def parse_query(params: Mapping[str, Sequence[str]], choices: Choices, base: Query | None = None) -> Query:
    """The filters of a request's query parameters (as ``urllib.parse.parse_qs`` gives them).

    A parameter left out keeps ``base``'s value (the command line's); an empty one means "all".
    Raises ``QueryError`` for an unknown parameter, a repeated one, a malformed date or number, or a
    language, model or experiment that the stores do not contain.
    """
    query = base or Query()
    unknown = sorted(set(params) - set(PARAMS))
    if unknown:
        raise QueryError(f"unknown parameter {_shown(unknown[0])}; the page takes {', '.join(PARAMS)}")
    values: dict[str, str] = {}
    for name, given in params.items():
        if len(given) != 1:
            raise QueryError(f"parameter {name!r} given {len(given)} times; give it once")
        values[name] = given[0].strip()

    changes: dict[str, object] = {}
    for name, attribute in (("from", "first_day"), ("to", "last_day")):
        if name in values:
            text = values[name]
            if not text:
                changes[attribute] = None
                continue
            try:
                if not _DAY.match(text):
                    raise ValueError
                changes[attribute] = date.fromisoformat(text)
            except ValueError:
                raise QueryError(f"{name} {_shown(text)}: expected a date like 2025-01-31") from None
    for name, attribute, allowed in (
        ("language", "language", choices.languages),
        ("model", "model", choices.models),
        ("experiment", "experiment", choices.experiments),
    ):
        if name in values:
            changes[attribute] = _one_of(name, values[name], allowed) if values[name] else None
    if values.get("budget"):
        text = values["budget"]
        if not _INTEGER.match(text) or not 1 <= int(text) <= MAX_BUDGET_MS:
            raise QueryError(f"budget {_shown(text)}: expected whole milliseconds from 1 to {MAX_BUDGET_MS}")
        changes["budget_ms"] = float(int(text))
    query = replace(query, **changes)  # type: ignore[arg-type]
    if query.first_day and query.last_day and query.first_day > query.last_day:
        raise QueryError(f"from {query.first_day} is after to {query.last_day}")
    return query


def apply_filters(frames: EventFrames, query: Query, experiment: str | None) -> EventFrames:
    """The events that match the query: a time window, then equality masks in pandas."""
    since = _day_start(query.first_day) if query.first_day else None
    until = _day_start(query.last_day + timedelta(days=1)) if query.last_day else None
    frames = frames.filter(since=since, until=until, experiment=experiment)
    if not query.language and not query.model:
        return frames
    tables: dict[str, pd.DataFrame] = {}
    for kind, df in frames.tables.items():
        mask = pd.Series(True, index=df.index)
        if query.language:
            mask &= df["language"] == query.language
        if query.model:
            mask &= df["model_id"] == query.model
        tables[kind] = df[mask].reset_index(drop=True)
    return EventFrames(tables)


# --- the view ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    level: Literal["info", "warning", "error"]
    text: str


@dataclass(frozen=True)
class SurvivalPoint:
    """What stayed of an arm's accepted suggestions at one checkpoint (see telemetry.persistence)."""

    checkpoint_s: float
    estimate: Estimate  # kept / accepted characters, ratio of means over installs, 95% interval
    measured: int
    unknown: int
    pending: int


@dataclass(frozen=True)
class ArmView:
    """Everything the page shows about one arm."""

    name: str
    colour: str
    funnel: Funnel
    installs: int
    cpo: Estimate  # ratio of means over installs, with its 95% interval
    latencies_ms: np.ndarray  # total latency of every returned suggestion
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    over_budget: float | None  # share of returned suggestions slower than the budget
    attempt_fates: dict[str, int]  # responses: "returned" or their loss reason -> count
    skip_rules: dict[str, int]
    survival: tuple[SurvivalPoint, ...] = ()  # share of accepted characters still there, per checkpoint

    @property
    def label(self) -> str:
        return self.name or NO_ARM


@dataclass(frozen=True)
class Cell:
    """CPO of the installs active in one cell (a day, a language) of one arm."""

    key: str
    arm: str
    estimate: Estimate
    installs: int
    opportunities: int
    accepted_chars: int


@dataclass(frozen=True)
class View:
    """The whole page as data; ``opportune.telemetry.dashboard.page`` renders it."""

    stores: tuple[str, ...]
    query: Query
    choices: Choices
    events: int  # after the filters
    installs: int
    experiment: str | None
    analysis: ExperimentAnalysis | None
    arms: list[ArmView]
    days: list[str]
    daily: list[Cell]
    languages: list[Cell]
    messages: list[Message] = field(default_factory=list)
    generated_at: float = field(default_factory=time.time)
    interval_note: str = ""  # which kind of interval the comparisons are, for people

    @property
    def colours(self) -> dict[str, str]:
        return {arm.name: arm.colour for arm in self.arms}

    @property
    def has_data(self) -> bool:
        return self.events > 0 and bool(self.arms)


def _sum(units: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Funnel counts summed to coarser groups (the counts are additive: each event is in one group)."""
    return units.groupby(keys, sort=True)[list(COUNT_COLUMNS)].sum().reset_index()


def _cells(units: pd.DataFrame, key: str) -> list[Cell]:
    """CPO per (key, arm) over the installs active in each cell, with 95% intervals.

    ``units`` holds funnel counts per arm, install, day and language.
    """
    per_install = _sum(units, [key, "arm", "install_id"])
    cells: list[Cell] = []
    for (value, arm), group in per_install.groupby([key, "arm"], sort=True):
        active = group[(group["opportunities"] > 0) | (group["accepted_chars"] > 0)]
        cells.append(
            Cell(
                key=str(value),
                arm=str(arm),
                estimate=ratio_of_means(
                    active["accepted_chars"].to_numpy(), active["opportunities"].to_numpy(), Z95
                ),
                installs=len(active),
                opportunities=int(group["opportunities"].sum()),
                accepted_chars=int(group["accepted_chars"].sum()),
            )
        )
    return cells


def _survival(frames: EventFrames) -> dict[str, tuple[SurvivalPoint, ...]]:
    """Per arm, per checkpoint: kept / accepted characters over the installs measured there."""
    table = checkpoint_table(frames)
    out: dict[str, tuple[SurvivalPoint, ...]] = {}
    if table.empty:
        return out
    for arm, rows in table.groupby("arm", sort=True):
        points = []
        for checkpoint, at in rows.groupby("checkpoint_s", sort=True):
            measured = at[at["status"] == "measured"]
            per_install = measured.groupby("install_id")[["kept_chars", "accepted_chars"]].sum()
            points.append(
                SurvivalPoint(
                    float(checkpoint),
                    ratio_of_means(
                        per_install["kept_chars"].to_numpy(), per_install["accepted_chars"].to_numpy(), Z95
                    ),
                    measured=len(measured),
                    unknown=int((at["status"] == "unknown").sum()),
                    pending=int((at["status"] == "pending").sum()),
                )
            )
        out[str(arm)] = tuple(points)
    return out


def _arm_order(observed: Sequence[str], analysis: ExperimentAnalysis | None) -> list[str]:
    if analysis is not None:
        ordered = [a.arm for a in analysis.arms]
        return ordered + sorted(a for a in observed if a not in ordered)
    return sorted(observed, key=lambda a: (a != "control", a))


def _all_days(first: str, last: str) -> list[str]:
    start, end = date.fromisoformat(first), date.fromisoformat(last)
    return [(start + timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]


def build_view(
    frames: EventFrames,
    query: Query,
    *,
    stores: Sequence[Path | str] = (),
    choices: Choices | None = None,
    peeking: PeekingPlan | None = PeekingPlan(),  # noqa: B008 -- a frozen dataclass
    now: float | None = None,
) -> View:
    """The dashboard of ``frames`` under ``query`` (already validated against ``choices``).

    ``peeking``: the comparisons are always-valid (the default: this page is looked at daily); None
    gives fixed-horizon ones.  ``now`` decides which days are complete (default: the clock).
    """
    choices = choices or Choices.of(frames)
    messages: list[Message] = []
    experiment = query.experiment
    if experiment is None and choices.experiments:
        experiment = _latest_experiment(frames, choices.experiments)
    if experiment and experiment not in choices.experiments:
        messages.append(Message("error", f"No events of experiment {experiment!r} in these stores."))
    selected = apply_filters(frames, query, experiment)
    base = View(
        stores=tuple(str(s) for s in stores),
        query=query,
        choices=choices,
        events=len(selected),
        installs=len(selected.installs()),
        experiment=experiment,
        analysis=None,
        arms=[],
        days=[],
        daily=[],
        languages=[],
        messages=messages,
    )
    if len(frames) == 0:
        messages.append(
            Message(
                "info",
                "This store has no events yet. Use Opportune in an editor (telemetry is on by default) "
                "and reload: the dashboard reads the store on every visit.",
            )
        )
        return base
    if len(selected) == 0 or selected.opportunities.empty:
        if not messages:
            messages.append(
                Message(
                    "info",
                    f"No opportunities match these filters ({query.describe()}"
                    f"{f', experiment {experiment}' if experiment else ''}). Widen the dates or clear a filter.",
                )
            )
        return replace(base, events=len(selected))

    # One pass of the funnel over the events, per arm, install, day and language; every view sums it.
    units = funnel_counts(selected, by=["arm", "install_id", "day", "language"])
    arm_units = _sum(units, ["arm", "install_id"])
    responses = selected.responses
    returned = responses[responses["loss_reason"].isna()]
    latencies = {
        str(arm): group["latency_total_ms"].dropna().to_numpy(dtype=float)
        for arm, group in returned.groupby("arm")
    }

    analysis: ExperimentAnalysis | None = None
    if experiment:
        try:
            # The same analysis as ``report``: always-valid, over the complete days of ``selected``.
            # The page shows the interval of CPO's lift and of the guardrails; the factors' lifts carry
            # their p-values only (inverting each test costs time on every page view).
            analysis = analyse(
                selected, experiment, peeking=peeking, now=now, intervals=("cpo", "guardrails")
            )
        except AnalysisError as exc:
            messages.append(Message("warning", f"No comparison: {exc}."))
    else:
        messages.append(
            Message(
                "info",
                "These events belong to no experiment, so there is no verdict: declare an [experiment] "
                "with arms in opportune.toml to compare configurations. Below: every arm as recorded.",
            )
        )
    if analysis is not None:
        messages.extend(Message("warning", w) for w in analysis.warnings)
        if len(analysis.arms) == 1:
            messages.append(
                Message(
                    "info",
                    f"Only one arm ({analysis.arms[0].arm}) has events: nothing to compare it with yet. "
                    "The verdict needs a second arm.",
                )
            )

    survival = _survival(selected)
    fates = responses["loss_reason"].fillna("returned").groupby(responses["arm"]).value_counts()
    skips = selected.skips.groupby(["arm", "rule"]).size()
    arms: list[ArmView] = []
    observed = [str(a) for a in arm_units["arm"].unique()]
    for i, name in enumerate(_arm_order(observed, analysis)):
        mine = arm_units[arm_units["arm"] == name]
        arm_latencies = latencies.get(name, np.zeros(0))
        result = next((a for a in analysis.arms if a.arm == name), None) if analysis else None
        cpo = (
            result.metrics["cpo"]
            if result is not None
            else ratio_of_means(mine["accepted_chars"].to_numpy(), mine["opportunities"].to_numpy(), Z95)
        )
        arms.append(
            ArmView(
                name=name,
                colour=ARM_COLOURS[i % len(ARM_COLOURS)],
                funnel=Funnel.from_counts(mine[list(Funnel.__dataclass_fields__)].sum()),
                installs=len(mine),
                cpo=cpo,
                latencies_ms=arm_latencies,
                latency_p50_ms=percentile(arm_latencies, 50),
                latency_p95_ms=percentile(arm_latencies, 95),
                over_budget=float((arm_latencies > query.budget_ms).mean()) if arm_latencies.size else None,
                attempt_fates=_counts(fates, name),
                skip_rules=_counts(skips, name),
                survival=survival.get(name, ()),
            )
        )

    daily = _cells(units, "day")
    days = _all_days(min(c.key for c in daily), max(c.key for c in daily)) if daily else []
    return replace(
        base,
        analysis=analysis,
        interval_note=analysis.describe_intervals() if analysis is not None else "",
        arms=arms,
        days=days,
        daily=daily,
        languages=_cells(units, "language"),
    )


def _counts(series: pd.Series, arm: str) -> dict[str, int]:
    """{name: count} of one arm from a series indexed by (arm, name), the largest first."""
    if series.empty or arm not in series.index.get_level_values(0):
        return {}
    mine = series.xs(arm, level=0)
    return {str(k): int(v) for k, v in sorted(mine.items(), key=lambda kv: (-kv[1], str(kv[0])))}


def _latest_experiment(frames: EventFrames, experiments: Sequence[str]) -> str:
    """The experiment with the most recent opportunity (the one people are looking at now)."""
    opportunities = frames.opportunities
    recent = opportunities[opportunities["experiment"].isin(experiments)]
    if recent.empty:
        return experiments[0]
    return str(recent.loc[recent["ts"].idxmax(), "experiment"])


# --- loading -------------------------------------------------------------------------------------------


class StoreLoader:
    """Loads the stores on demand, again only when one of their files changed (the page reloads cheaply).

    Thread-safe: the HTTP server answers requests on several threads.
    """

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)
        self._lock = threading.Lock()
        self._signature: tuple[object, ...] | None = None
        self._frames: EventFrames | None = None

    def signature(self) -> tuple[object, ...]:
        """mtime and size of every store and its write-ahead log: changes when any event is written."""
        parts: list[object] = []
        for path in self.paths:
            for candidate in (path, path.with_name(path.name + "-wal")):
                try:
                    st = candidate.stat()
                    parts.append((str(candidate), st.st_mtime_ns, st.st_size))
                except OSError:
                    parts.append((str(candidate), None))
        return tuple(parts)

    def load(self) -> tuple[EventFrames, tuple[object, ...]]:
        """The merged events and the signature they were loaded at.  Raises ``StoreError``."""
        with self._lock:
            signature = self.signature()
            if self._frames is None or signature != self._signature:
                self._frames = open_events(self.paths)  # raises StoreError: nothing cached then
                self._signature = signature
            return self._frames, signature


def format_day(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


def finite(value: float | None) -> float | None:
    """``value`` when it is a finite number, else None (charts skip it)."""
    return value if value is not None and math.isfinite(value) else None
