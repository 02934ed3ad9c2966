"""The CPO funnel from events: opportunities -> attempts -> shown -> accepted, and its five factors.

    attempt rate      = attempts        / opportunities
    feedback rate     = shown           / attempts
    acceptance rate   = accepted        / shown
    tokens per accept = accepted tokens / accepted
    chars per token   = accepted chars  / accepted tokens
    CPO               = the product     = accepted chars / opportunities

Each factor is a ratio of sums over the same events, so the product telescopes exactly to CPO.

Counting rules:
- opportunities: every ``opportunity`` row (bulk edits are ``edit`` rows and never count);
- attempts: every ``attempt`` row (model or typeahead cache);
- shown: distinct completion ids with a ``shown`` row, client-reported and inferred counted once; a
  completion accepted without any ``shown`` row counts as shown too (acceptance proves display), so
  the acceptance rate cannot exceed 1;
- outcome: one per completion id: an explicit client report beats an inferred one, otherwise the
  latest wins; accepted = outcomes ``accepted`` or ``partial``, with their characters and tokens;
- keystrokes saved: the ``keystrokes_saved`` of the resolved accepted outcomes (characters not typed
  minus one key per accept or partial accept);
- persistence: ``persisted_chars`` / ``measured_chars``, the characters still there at each accepted
  suggestion's last measured checkpoint over its accepted characters (``opportune.telemetry.persistence``);
- latency: ``latency_total_ms`` of responses that returned a suggestion (``loss_reason`` NULL);
- losses: ``loss_reason`` counts of responses, and the trigger ``skip`` rules separately.

Rows are grouped by the ``Common`` fields each row carries (language, arm, model, install...).

Next edits have their own funnel beside it (``EditFunnel``): edit opportunities (an edit with follow-ups,
counted once per change) -> next edits shown (offered to the client, each id once) -> accepted /
rejected (one outcome per id, the first explicit one winning over inferred ones), with the characters
the accepted edits changed; **edit CPO** = characters changed by accepted edits / edit opportunities.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from opportune.telemetry.frames import EventFrames
from opportune.telemetry.persistence import checkpoint_table, last_measured, survival_of
from opportune.telemetry.schema import parse_stages

# User-facing grouping names -> the column they group by.
GROUP_COLUMNS: dict[str, str] = {
    "language": "language",
    "arm": "arm",
    "model": "model_id",
    "install": "install_id",
    "experiment": "experiment",
    "client": "client",
    "day": "day",  # derived: the UTC date of the event's ts
}

# The funnel counts, in funnel order.
COUNT_COLUMNS: tuple[str, ...] = (
    "opportunities",
    "attempts",
    "shown",
    "accepted",
    "accepted_chars",
    "accepted_tokens",
    "responses",
    "errors",
    "keystrokes_saved",
    "persisted_chars",
    "measured_chars",
)

# factor name -> (numerator count, denominator count).  CPO is last; the five before it multiply to it.
FACTORS: dict[str, tuple[str, str]] = {
    "attempt_rate": ("attempts", "opportunities"),
    "feedback_rate": ("shown", "attempts"),
    "acceptance_rate": ("accepted", "shown"),
    "tokens_per_accept": ("accepted_tokens", "accepted"),
    "chars_per_token": ("accepted_chars", "accepted_tokens"),
}
CPO_RATIO: tuple[str, str] = ("accepted_chars", "opportunities")
METRICS: dict[str, tuple[str, str]] = {**FACTORS, "cpo": CPO_RATIO}
# What followed the accepts, beside CPO (not factors of it): also ratios of sums over the same units.
FOLLOW_UP: dict[str, tuple[str, str]] = {
    "keystrokes_saved_per_opportunity": ("keystrokes_saved", "opportunities"),
    "persistence": ("persisted_chars", "measured_chars"),
}

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str, *, now: float | None = None) -> float:
    """A Unix time from ``7d``, ``24h``, ``30m``, ``2w`` (ago) or an ISO date/time (UTC unless it says).

    Raises ValueError with a message fit for the command line.
    """
    match = _RELATIVE.match(text)
    if match:
        reference = time.time() if now is None else now
        return reference - float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"--since {text!r}: expected an ISO date (2025-01-31) or an age like 7d, 24h"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def group_column(name: str) -> str:
    """The column behind a grouping name (``model`` -> ``model_id``); column names pass through."""
    if name in GROUP_COLUMNS:
        return GROUP_COLUMNS[name]
    if name in GROUP_COLUMNS.values():
        return name
    raise ValueError(f"cannot group by {name!r}; choose from {', '.join(GROUP_COLUMNS)}")


def ratio(numerator: float, denominator: float) -> float | None:
    """numerator / denominator, or None when the denominator is zero (undefined, not zero)."""
    return float(numerator) / float(denominator) if denominator else None


# --- deduplication -------------------------------------------------------------------------------------


def resolved_outcomes(frames: EventFrames) -> pd.DataFrame:
    """One outcome row per completion id: explicit beats inferred, then the latest wins."""
    outcomes = frames.outcomes
    if outcomes.empty:
        return outcomes
    ordered = outcomes.assign(_explicit=1 - outcomes["inferred"]).sort_values(
        ["_explicit", "ts"], kind="stable"
    )
    return ordered.drop_duplicates("completion_id", keep="last").drop(columns="_explicit")


def shown_completions(frames: EventFrames, accepted: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per completion shown (its first report), plus accepted completions never reported shown."""
    shown = frames.shown.sort_values("ts", kind="stable").drop_duplicates("completion_id", keep="first")
    if accepted is None:
        accepted = accepted_outcomes(frames)
    unseen = accepted[~accepted["completion_id"].isin(shown["completion_id"])]
    if unseen.empty:
        return shown
    return pd.concat([shown, unseen[[c for c in shown.columns if c in unseen.columns]]], ignore_index=True)


def accepted_outcomes(frames: EventFrames) -> pd.DataFrame:
    outcomes = resolved_outcomes(frames)
    return outcomes[outcomes["outcome"].isin(["accepted", "partial"])]


# --- counting ------------------------------------------------------------------------------------------


def _keyed(df: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """``df`` with the grouping columns it lacks: the derived ``day``, or a constant key when ungrouped
    (so that the ungrouped case is the same code as the grouped one)."""
    if "day" in keys and "day" not in df.columns:
        # Format each distinct day once: strftime per row is slow on big stores.
        days, inverse = np.unique(np.floor(df["ts"].to_numpy(dtype="float64") / 86400), return_inverse=True)
        labels = np.array(
            [datetime.fromtimestamp(d * 86400, UTC).strftime("%Y-%m-%d") for d in days], dtype=object
        )
        df = df.assign(day=labels[inverse.reshape(-1)] if len(df) else np.array([], dtype=object))
    if not keys:
        df = df.assign(_all="")
    return df


def _by_groups(df: pd.DataFrame, keys: list[str]) -> Any:
    # dropna=False: a row whose key is missing still counts, in its own group.
    return df.groupby(keys, sort=True, dropna=False)


def funnel_counts(frames: EventFrames, by: Sequence[str] = ()) -> pd.DataFrame:
    """The funnel counts (``COUNT_COLUMNS``) per group, one row per group, keys as columns.

    ``by`` holds grouping names or columns (``language``, ``arm``, ``model``, ``install_id``...); with
    none, one row for everything.  Groups absent from one kind of event get zeros.  By model, the rows
    recorded before the model was known are left out.
    """
    keys = [group_column(b) for b in by]
    group_keys = keys or ["_all"]
    if "model_id" in keys:
        frames = frames.known_models()

    def grouped(df: pd.DataFrame) -> Any:
        return _by_groups(_keyed(df, keys), group_keys)

    accepted = accepted_outcomes(frames)
    by_accepted = grouped(accepted)
    by_persisted = grouped(last_measured(frames))
    responses = _keyed(frames.responses, keys)
    parts: list[pd.Series] = [
        grouped(frames.opportunities).size().rename("opportunities"),
        grouped(frames.attempts).size().rename("attempts"),
        grouped(shown_completions(frames, accepted)).size().rename("shown"),
        by_accepted.size().rename("accepted"),
        by_accepted["accepted_chars"].sum().rename("accepted_chars"),
        by_accepted["accepted_tokens"].sum().rename("accepted_tokens"),
        _by_groups(responses, group_keys).size().rename("responses"),
        _by_groups(responses[responses["loss_reason"] == "error"], group_keys).size().rename("errors"),
        by_accepted["keystrokes_saved"].sum().rename("keystrokes_saved"),
        by_persisted["kept_chars"].sum().rename("persisted_chars"),
        by_persisted["accepted_chars"].sum().rename("measured_chars"),
    ]
    table = pd.concat(parts, axis=1).fillna(0).astype("int64")
    table = table.reset_index()
    if not keys:
        table = table.drop(columns="_all")
        if table.empty:
            table = pd.DataFrame({c: [0] for c in COUNT_COLUMNS})
    return table[[*keys, *COUNT_COLUMNS]]


@dataclass(frozen=True)
class Funnel:
    """The funnel counts of one group and the factors derived from them."""

    opportunities: int = 0
    attempts: int = 0
    shown: int = 0
    accepted: int = 0
    accepted_chars: int = 0
    accepted_tokens: int = 0
    keystrokes_saved: int = 0
    persisted_chars: int = 0
    measured_chars: int = 0

    @classmethod
    def from_counts(cls, counts: Any) -> Funnel:
        """From a mapping or a row with the count columns (follow-up counts it lacks are 0)."""
        return cls(
            **{
                name: int(counts[name])
                for name in cls.__dataclass_fields__
                if name in counts or name not in ("keystrokes_saved", "persisted_chars", "measured_chars")
            }
        )

    @property
    def attempt_rate(self) -> float | None:
        return ratio(self.attempts, self.opportunities)

    @property
    def feedback_rate(self) -> float | None:
        return ratio(self.shown, self.attempts)

    @property
    def acceptance_rate(self) -> float | None:
        return ratio(self.accepted, self.shown)

    @property
    def tokens_per_accept(self) -> float | None:
        return ratio(self.accepted_tokens, self.accepted)

    @property
    def chars_per_token(self) -> float | None:
        return ratio(self.accepted_chars, self.accepted_tokens)

    @property
    def cpo(self) -> float | None:
        return ratio(self.accepted_chars, self.opportunities)

    @property
    def keystrokes_saved_per_opportunity(self) -> float | None:
        return ratio(self.keystrokes_saved, self.opportunities)

    @property
    def persistence(self) -> float | None:
        """Accepted characters still there at the last checkpoint, over those measured."""
        return ratio(self.persisted_chars, self.measured_chars)

    @property
    def persisted_cpo(self) -> float | None:
        """CPO x persistence: accepted characters per opportunity that stayed (see telemetry.persistence)."""
        cpo, kept = self.cpo, self.persistence
        return None if cpo is None or kept is None else cpo * kept

    def follow_up(self) -> dict[str, float | None]:
        """Keystrokes saved per opportunity, persistence and persisted CPO, by name."""
        return {
            "keystrokes_saved_per_opportunity": self.keystrokes_saved_per_opportunity,
            "persistence": self.persistence,
            "persisted_cpo": self.persisted_cpo,
        }

    def factors(self) -> dict[str, float | None]:
        """The five factors and CPO, by name (``METRICS`` order)."""
        return {name: getattr(self, name) for name in METRICS}

    def factor_product(self) -> float | None:
        """The product of the five factors; equals ``cpo`` whenever every factor is defined."""
        values = [getattr(self, name) for name in FACTORS]
        if any(v is None for v in values):
            return None
        return math.prod(v for v in values if v is not None)


@dataclass(frozen=True)
class EditFunnel:
    """The next-edit funnel of one group."""

    edit_opportunities: int = 0
    shown: int = 0
    accepted: int = 0
    rejected: int = 0
    chars_changed: int = 0

    @property
    def acceptance_rate(self) -> float | None:
        return ratio(self.accepted, self.shown)

    @property
    def edit_cpo(self) -> float | None:
        return ratio(self.chars_changed, self.edit_opportunities)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "acceptance_rate": self.acceptance_rate, "edit_cpo": self.edit_cpo}


EDIT_COUNT_COLUMNS: tuple[str, ...] = tuple(EditFunnel.__dataclass_fields__)


def edit_funnel_counts(frames: EventFrames, by: Sequence[str] = ()) -> pd.DataFrame:
    """The next-edit funnel counts (``EDIT_COUNT_COLUMNS``) per group, keys as columns."""
    keys = [group_column(b) for b in by]
    group_keys = keys or ["_all"]
    outcomes = frames["next_edit_outcome"].copy()
    # One outcome per next edit: an explicit one beats inferred ones, otherwise the first.
    outcomes = outcomes.sort_values(["inferred", "ts"], kind="stable").drop_duplicates("next_edit_id")
    outcomes = _keyed(outcomes, keys)
    accepted = outcomes[outcomes["outcome"] == "accepted"]
    parts = [
        _by_groups(_keyed(frames["edit_opportunity"], keys), group_keys).size().rename("edit_opportunities"),
        _by_groups(_keyed(frames["next_edit"].drop_duplicates("next_edit_id"), keys), group_keys)
        .size()
        .rename("shown"),
        _by_groups(accepted, group_keys).size().rename("accepted"),
        _by_groups(outcomes[outcomes["outcome"] == "rejected"], group_keys).size().rename("rejected"),
        _by_groups(accepted, group_keys)["chars_changed"].sum().rename("chars_changed"),
    ]
    table = pd.concat(parts, axis=1).fillna(0).astype("int64").reset_index()
    if not keys:
        table = table.drop(columns="_all")
        if table.empty:
            table = pd.DataFrame({c: [0] for c in EDIT_COUNT_COLUMNS})
    return table[[*keys, *EDIT_COUNT_COLUMNS]]


@dataclass(frozen=True)
class GroupSummary:
    """The report for one group: funnel, factors, latency, losses, stage timings."""

    group: dict[str, str]
    funnel: Funnel
    installs: int
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    loss_reasons: dict[str, int] = field(default_factory=dict)
    skip_rules: dict[str, int] = field(default_factory=dict)
    stage_medians_ms: dict[str, float] = field(default_factory=dict)
    # Per checkpoint: seconds, measured / unknown / pending counts, survival (kept / accepted chars).
    persistence: list[dict[str, Any]] = field(default_factory=list)
    edits: EditFunnel = field(default_factory=EditFunnel)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["factors"] = self.funnel.factors()
        out["follow_up"] = self.funnel.follow_up()
        out["edits"] = self.edits.to_dict()
        return out


def returned_latencies(responses: pd.DataFrame) -> pd.Series:
    """``latency_total_ms`` of the responses that returned a suggestion."""
    return responses.loc[responses["loss_reason"].isna(), "latency_total_ms"]


def _as_key(index_value: Any) -> tuple[Any, ...]:
    return index_value if isinstance(index_value, tuple) else (index_value,)


def _per_group(series: pd.Series) -> dict[tuple[Any, ...], dict[str, Any]]:
    """A series indexed by (group keys..., name) as {group key tuple: {name: value}}."""
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for index, value in series.items():
        key = _as_key(index)
        out.setdefault(key[:-1], {})[str(key[-1])] = value
    return out


def summarise(frames: EventFrames, by: Sequence[str] = (), now: float | None = None) -> list[GroupSummary]:
    """One ``GroupSummary`` per group (sorted by key), or one for everything when ``by`` is empty.

    ``now`` decides which persistence checkpoints are still pending (default: the current time)."""
    keys = [group_column(b) for b in by]
    group_keys = keys or ["_all"]
    if "model_id" in keys:
        frames = frames.known_models()  # rows before the model was known name no model
    counts = funnel_counts(frames, by)

    # Everything below is one vectorised pass per quantity, then looked up per group: a report by
    # install can have thousands of groups.
    responses = _keyed(frames.responses, keys)
    returned = responses[responses["loss_reason"].isna()]
    quantiles = _by_groups(returned, group_keys)["latency_total_ms"].quantile([0.5, 0.95])
    latency = _per_group(quantiles)
    losses = _per_group(
        _by_groups(responses.dropna(subset=["loss_reason"]), [*group_keys, "loss_reason"]).size()
    )
    skips = _per_group(_by_groups(_keyed(frames.skips, keys), [*group_keys, "rule"]).size())
    stage_rows = [
        (*_as_key(key), stage, ms)
        for key, raw in zip(
            responses[group_keys].itertuples(index=False, name=None), responses["stages_ms"], strict=True
        )
        for stage, ms in parse_stages(raw).items()
    ]
    stages = _per_group(
        pd.DataFrame(stage_rows, columns=[*group_keys, "stage", "ms"])
        .groupby([*group_keys, "stage"])["ms"]
        .median()
    )
    install_columns = list(dict.fromkeys([*group_keys, "install_id"]))  # grouping by install: once
    install_rows = pd.concat(
        [
            _keyed(df, keys)[install_columns]
            for df in (frames.opportunities, frames.attempts, frames.responses)
        ]
    ).drop_duplicates()
    installs = {_as_key(k): int(v) for k, v in _by_groups(install_rows, group_keys).size().items()}
    persistence: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for record in survival_of(_keyed(checkpoint_table(frames, now), keys), group_keys).to_dict("records"):
        key = tuple(record.pop(k) for k in group_keys)
        persistence.setdefault(key, []).append(
            {k: (None if k == "survival" and pd.isna(v) else v) for k, v in record.items()}
        )

    edit_counts = {
        tuple(row[k] for k in keys) if keys else ("",): EditFunnel(
            **{c: int(row[c]) for c in EDIT_COUNT_COLUMNS}
        )
        for _, row in edit_funnel_counts(frames, by).iterrows()
    }
    summaries: list[GroupSummary] = []
    for _, row in counts.iterrows():
        key = tuple(row[k] for k in keys) if keys else ("",)
        group_latency = latency.get(key, {})
        summaries.append(
            GroupSummary(
                group={k: str(row[k]) for k in keys},
                funnel=Funnel.from_counts(row),
                installs=installs.get(key, 0),
                latency_p50_ms=_float(group_latency.get("0.5")),
                latency_p95_ms=_float(group_latency.get("0.95")),
                loss_reasons=_sorted_counts(losses.get(key, {})),
                skip_rules=_sorted_counts(skips.get(key, {})),
                stage_medians_ms={k: float(v) for k, v in sorted(stages.get(key, {}).items())},
                persistence=persistence.get(key, []),
                edits=edit_counts.get(key, EditFunnel()),
            )
        )
    # Groups with next-edit events only (an arm where nobody typed a completion yet) are reported too.
    seen = {tuple(s.group[k] for k in keys) if keys else ("",) for s in summaries}
    for key, edits in edit_counts.items():
        if tuple(str(k) for k in key) not in seen and (keys or not summaries):
            summaries.append(
                GroupSummary(
                    group={k: str(v) for k, v in zip(keys, key, strict=True)},
                    funnel=Funnel(),
                    installs=0,
                    latency_p50_ms=None,
                    latency_p95_ms=None,
                    edits=edits,
                )
            )
    summaries.sort(key=lambda s: tuple(s.group.values()))
    return summaries


def _float(value: Any) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def _sorted_counts(counts: dict[str, Any]) -> dict[str, int]:
    """Counts as ints, the largest first (ties by name)."""
    return {k: int(v) for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))}


# --- context sources ----------------------------------------------------------------------------------


def by_context_source(frames: EventFrames) -> list[dict[str, Any]]:
    """Per context source of the model's prompts (``project``, ``syntax``...): the model attempts that used
    it, its mean tokens in them, and how their suggestions fared (shown, accepted, acceptance rate).

    Read from the attempt rows' ``context_parts`` ("name:tokens,..."); a source every prompt carries buys
    nothing measurable here, one that some prompts lack compares the two kinds of attempt.
    """
    attempts = frames.attempts
    if attempts.empty or "context_parts" not in attempts.columns:
        return []
    attempts = attempts[attempts["context_parts"].fillna("") != ""]
    if attempts.empty:
        return []
    responses = frames.responses
    completion_of = dict(
        zip(responses["attempt_id"], responses["completion_id"], strict=False) if not responses.empty else ()
    )
    shown = set(shown_completions(frames)["completion_id"])
    accepted = set(accepted_outcomes(frames)["completion_id"])
    rows: dict[str, dict[str, Any]] = {}
    for attempt_id, parts in zip(attempts["attempt_id"], attempts["context_parts"], strict=True):
        completion = completion_of.get(attempt_id)
        for item in str(parts).split(","):
            name, _, tokens = item.partition(":")
            row = rows.setdefault(
                name, {"source": name, "attempts": 0, "tokens": 0, "shown": 0, "accepted": 0}
            )
            row["attempts"] += 1
            row["tokens"] += int(tokens) if tokens.isdigit() else 0
            if isinstance(completion, str) and completion in shown:
                row["shown"] += 1
                row["accepted"] += completion in accepted
    for row in rows.values():
        row["mean_tokens"] = row.pop("tokens") / row["attempts"]
        row["acceptance_rate"] = ratio(row["accepted"], row["shown"])
    return list(rows.values())
