"""Simulated installs with a known true CPO per arm: for testing the analysis and for demo data.

Each install draws its own activity (a gamma-Poisson number of opportunities) and its own acceptance
propensity (a beta draw around the arm's acceptance rate), so events within an install are correlated
as real keystrokes are; the funnel then follows binomial and Poisson draws whose expectations are the
arm's factors.  The arm's true CPO is the product of its five factors (``ArmTruth.cpo``), and the
ratio-of-means estimator converges to it.

``simulate_units`` gives per-install counts (fast: thousands of simulated experiments per second);
``units_to_frames`` expands them into event rows with consistent ids, for end-to-end tests of the
event pipeline.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from opportune.telemetry.cpo import COUNT_COLUMNS
from opportune.telemetry.frames import EventFrames

SIMULATED_CHECKPOINTS_S = (30.0, 120.0, 600.0)


@dataclass(frozen=True)
class ArmTruth:
    """The true factors of one simulated arm."""

    attempt_rate: float = 0.6
    feedback_rate: float = 0.7
    acceptance_rate: float = 0.25
    tokens_per_accept: float = 6.0
    chars_per_token: float = 3.5
    error_rate: float = 0.01  # responses with loss_reason "error" per attempt (must be < 1 - feedback_rate)
    latency_ms: float = 150.0  # median total latency of returned suggestions
    persistence: float = 0.8  # share of accepted characters still there at the last checkpoint

    @property
    def cpo(self) -> float:
        return math.prod(
            (
                self.attempt_rate,
                self.feedback_rate,
                self.acceptance_rate,
                self.tokens_per_accept,
                self.chars_per_token,
            )
        )


@dataclass(frozen=True)
class Heterogeneity:
    """How much installs differ from each other (the spread that makes small experiments hard).

    ``activity_dispersion``: squared coefficient of variation of an install's activity (gamma), 4 is
    "very uneven" (a few installs type most of the code).  ``acceptance_concentration``: beta
    concentration of an install's acceptance propensity around the arm's rate; 2 is "widely spread".
    ``length_sigma``: log-normal sigma of each accepted suggestion's length around the arm's mean
    (0: Poisson only; 1.2: long-tailed, a few accepts carry whole blocks).  ``latency_sigma``: log-normal
    sigma of an install's latency level (its machine) around the arm's median.
    """

    activity_dispersion: float = 1.0
    acceptance_concentration: float = 20.0
    length_sigma: float = 0.0
    latency_sigma: float = 0.2


# Named settings for the simulation checks (tests and bench/stats_sweep.py).
HETEROGENEITY: dict[str, Heterogeneity] = {
    "low spread": Heterogeneity(activity_dispersion=0.3, acceptance_concentration=100.0),
    "moderate": Heterogeneity(),
    "uneven activity": Heterogeneity(activity_dispersion=4.0),
    "spread acceptance": Heterogeneity(acceptance_concentration=2.0),
    "long-tailed lengths": Heterogeneity(length_sigma=1.2),
    "all at once": Heterogeneity(
        activity_dispersion=4.0, acceptance_concentration=2.0, length_sigma=1.2, latency_sigma=0.4
    ),
}


def simulate_units(
    arms: Mapping[str, ArmTruth],
    units: int | Mapping[str, int],
    rng: np.random.Generator,
    *,
    opportunities_mean: float = 200.0,
    activity_dispersion: float = 1.0,
    acceptance_concentration: float = 20.0,
    heterogeneity: Heterogeneity | None = None,
    latency: bool = False,
    days: int = 1,
) -> pd.DataFrame:
    """Per-install funnel counts: columns ``arm``, ``install_id`` and ``COUNT_COLUMNS``.

    ``units`` is the number of installs per arm (one number for all, or per arm).  ``heterogeneity``
    (default: from ``activity_dispersion`` and ``acceptance_concentration``) sets how installs differ.
    ``latency`` adds each install's ``latency_p50_ms`` and ``latency_p95_ms`` over its shown
    suggestions (NaN below 5).  With ``days`` > 1 the table gains a ``day`` column (1..days): each
    install's activity is spread over the days, its propensities the same every day.
    """
    h = heterogeneity or Heterogeneity(activity_dispersion, acceptance_concentration)
    tables: list[pd.DataFrame] = []
    for arm, truth in arms.items():
        n = units if isinstance(units, int) else units[arm]
        activity = rng.gamma(1 / h.activity_dispersion, opportunities_mean * h.activity_dispersion, size=n)
        k = h.acceptance_concentration
        propensity = rng.beta(truth.acceptance_rate * k, (1 - truth.acceptance_rate) * k, size=n)
        speed = np.exp(rng.normal(0.0, h.latency_sigma, size=n))
        # People differ in how much of what they accept they keep: a beta draw per install.
        keeps = rng.beta(truth.persistence * k + 1e-9, (1 - truth.persistence) * k + 1e-9, size=n)
        for day in range(1, days + 1):
            table = _one_day(arm, truth, h, activity / days, propensity, keeps, speed, rng, latency)
            if days > 1:
                table.insert(2, "day", day)
            tables.append(table)
    table = pd.concat(tables, ignore_index=True)
    extra = [c for c in ("day", "latency_level_ms", "latency_p50_ms", "latency_p95_ms") if c in table.columns]
    return table[["arm", "install_id", *COUNT_COLUMNS, *extra]]


MIN_INSTALL_LATENCIES = 5


def _one_day(
    arm: str,
    truth: ArmTruth,
    h: Heterogeneity,
    activity: np.ndarray,
    propensity: np.ndarray,
    keeps: np.ndarray,
    speed: np.ndarray,
    rng: np.random.Generator,
    latency: bool,
) -> pd.DataFrame:
    n = activity.size
    opportunities = rng.poisson(activity)
    attempts = rng.binomial(opportunities, truth.attempt_rate)
    shown = rng.binomial(attempts, truth.feedback_rate)
    error_share = min(1.0, truth.error_rate / (1 - truth.feedback_rate)) if truth.feedback_rate < 1 else 0.0
    errors = rng.binomial(attempts - shown, error_share)
    accepted = rng.binomial(shown, propensity)
    if h.length_sigma > 0:
        # Each accept's expected length is log-normal (mean 1, so the arm's mean holds): a long tail.
        sigma = h.length_sigma
        lengths = np.exp(rng.normal(-sigma * sigma / 2, sigma, size=int(accepted.sum())))
        running = np.r_[0.0, np.cumsum(lengths)]
        ends = np.cumsum(accepted)
        scale = running[ends] - running[ends - accepted]  # each install's accepts, summed
    else:
        scale = accepted.astype(float)
    tokens = rng.poisson(scale * truth.tokens_per_accept)
    chars = rng.poisson(tokens * truth.chars_per_token)
    table = pd.DataFrame(
        {
            "arm": arm,
            "install_id": [f"sim-{arm}-{i:06d}" for i in range(n)],
            "opportunities": opportunities,
            "attempts": attempts,
            "shown": shown,
            "accepted": accepted,
            "accepted_chars": chars,
            "accepted_tokens": tokens,
            "responses": attempts,
            "errors": errors,
            "keystrokes_saved": np.maximum(chars - accepted, 0),
            "persisted_chars": rng.binomial(chars, keeps),
            "measured_chars": chars,
        }
    )
    if latency:
        table["latency_level_ms"] = truth.latency_ms * speed
        _add_latency_quantiles(table, rng)
    return table


def _add_latency_quantiles(table: pd.DataFrame, rng: np.random.Generator) -> None:
    """Each install's p50 and p95 over ``shown`` log-normal latencies around its ``latency_level_ms``."""
    shown = table["shown"].to_numpy()
    level = table["latency_level_ms"].to_numpy(dtype=float)
    p50 = np.full(len(table), np.nan)
    p95 = np.full(len(table), np.nan)
    for i in np.flatnonzero(shown >= MIN_INSTALL_LATENCIES):
        draws = rng.lognormal(math.log(level[i]), 0.5, size=int(shown[i]))
        p50[i], p95[i] = np.percentile(draws, [50, 95])
    table["latency_p50_ms"] = p50
    table["latency_p95_ms"] = p95


def cumulative_units(
    daily: pd.DataFrame, through_day: int, rng: np.random.Generator | None = None
) -> pd.DataFrame:
    """The unit table of the first ``through_day`` days of a ``simulate_units(..., days=N)`` table:
    counts summed per install, installs with no opportunity yet left out (they left no event).  With
    ``rng`` and latencies simulated, each install's quantiles are drawn over all its shown suggestions
    so far (fresh draws around the same level)."""
    upto = daily[daily["day"] <= through_day]
    table = upto.groupby(["arm", "install_id"], sort=False)[list(COUNT_COLUMNS)].sum().reset_index()
    if rng is not None and "latency_level_ms" in daily.columns:
        levels = upto.groupby(["arm", "install_id"], sort=False)["latency_level_ms"].first().to_numpy()
        table["latency_level_ms"] = levels
        _add_latency_quantiles(table, rng)
    return table[table["opportunities"] > 0].reset_index(drop=True)


def simulate_latencies(
    arms: Mapping[str, ArmTruth], counts: Mapping[str, int], rng: np.random.Generator, sigma: float = 0.5
) -> dict[str, np.ndarray]:
    """Log-normal total latencies (ms) of returned suggestions, ``counts[arm]`` per arm."""
    return {
        arm: rng.lognormal(math.log(truth.latency_ms), sigma, size=counts[arm]) for arm, truth in arms.items()
    }


def units_to_frames(
    units: pd.DataFrame,
    rng: np.random.Generator,
    *,
    experiment: str = "sim",
    arms: Mapping[str, ArmTruth] | None = None,
    language: str = "python",
    model_id: str = "sim-model",
    start_ts: float = 1_700_000_000.0,
    span_s: float = 7 * 86400.0,
) -> EventFrames:
    """Events consistent with per-install counts, ids chained opportunity -> attempt -> response -> outcome.

    Each install's accepted characters and tokens are split across its accepted completions; attempts
    that show nothing end with "error" (``errors`` of them) or "deadline".  ``arms`` gives latencies.
    """
    rows: dict[str, dict[str, list[Any]]] = {
        kind: {} for kind in ("opportunity", "attempt", "response", "shown", "outcome", "persistence")
    }

    def add(kind: str, n: int, **columns: Any) -> None:
        table = rows[kind]
        for name, value in columns.items():
            values = list(value) if isinstance(value, list | np.ndarray) else [value] * n
            table.setdefault(name, []).extend(values)

    for rec in units.itertuples(index=False):
        arm, install = str(rec.arm), str(rec.install_id)
        common = {
            "install_id": install,
            "session_id": f"{install}-s",
            "experiment": experiment,
            "arm": arm,
            "model_id": model_id,
            "language": language,
        }
        n_opp, n_att, n_shown, n_acc = (
            int(rec.opportunities),
            int(rec.attempts),
            int(rec.shown),
            int(rec.accepted),
        )
        n_err = int(rec.errors)

        def ids(prefix: str, n: int, install: str = install) -> list[str]:
            return [f"{install}-{prefix}{i}" for i in range(n)]

        def times(n: int) -> np.ndarray:
            return start_ts + rng.uniform(0, span_s, size=n)

        opp_ids = ids("o", n_opp)
        add(
            "opportunity",
            n_opp,
            event_id=ids("eo", n_opp),
            ts=times(n_opp),
            opportunity_id=opp_ids,
            document_hash="doc",
            edit_kind="insert",
            **common,
        )
        att_ids = ids("a", n_att)
        add(
            "attempt",
            n_att,
            event_id=ids("ea", n_att),
            ts=times(n_att),
            attempt_id=att_ids,
            opportunity_id=opp_ids[:n_att],
            source="model",
            **common,
        )
        completion_ids = ids("c", n_shown)
        loss = [None] * n_shown + ["error"] * n_err + ["deadline"] * (n_att - n_shown - n_err)
        median = arms[arm].latency_ms if arms and arm in arms else 150.0
        add(
            "response",
            n_att,
            event_id=ids("er", n_att),
            ts=times(n_att),
            attempt_id=att_ids,
            latency_total_ms=rng.lognormal(math.log(median), 0.5, size=n_att),
            generated_tokens=8,
            stop_reason="eol",
            chars=20,
            lines=1,
            loss_reason=loss,
            completion_id=completion_ids + [None] * (n_att - n_shown),
            **common,
        )
        add(
            "shown",
            n_shown,
            event_id=ids("es", n_shown),
            ts=times(n_shown),
            completion_id=completion_ids,
            attempt_id=att_ids[:n_shown],
            **common,
        )
        if n_acc:
            chars = rng.multinomial(int(rec.accepted_chars), [1 / n_acc] * n_acc)
            tokens = rng.multinomial(int(rec.accepted_tokens), [1 / n_acc] * n_acc)
        else:
            chars = tokens = np.zeros(0, dtype=int)
        add(
            "outcome",
            n_shown,
            event_id=ids("eu", n_shown),
            ts=times(n_shown),
            completion_id=completion_ids,
            outcome=["partial"] * n_acc + ["rejected"] * (n_shown - n_acc),
            accepted_chars=[*chars, *([0] * (n_shown - n_acc))],
            accepted_tokens=[*tokens, *([0] * (n_shown - n_acc))],
            keystrokes_saved=[*np.maximum(chars - 1, 0), *([0] * (n_shown - n_acc))],
            **common,
        )
        if n_acc:
            # Persistence rows: a tracking row per accepted completion, then the checkpoints, keeping what
            # the install keeps at the last one and more at the earlier ones (a survival curve).
            share = int(getattr(rec, "persisted_chars", 0)) / max(1, int(rec.accepted_chars))
            accepted_ids = completion_ids[:n_acc]
            tracked_at = times(n_acc)
            add(
                "persistence",
                n_acc,
                event_id=ids("ept", n_acc),
                ts=tracked_at,
                completion_id=accepted_ids,
                status="tracking",
                checkpoints=",".join(f"{c:g}" for c in SIMULATED_CHECKPOINTS_S),
                accepted_chars=chars,
                checkpoint_s=0.0,
                kept_chars=0,
                fraction=None,
                **common,
            )
            for step, checkpoint in enumerate(SIMULATED_CHECKPOINTS_S):
                kept_share = 1 - (1 - share) * (step + 1) / len(SIMULATED_CHECKPOINTS_S)
                kept = np.rint(chars * kept_share).astype(int)
                add(
                    "persistence",
                    n_acc,
                    event_id=ids(f"ep{step}-", n_acc),
                    ts=tracked_at + checkpoint,
                    completion_id=accepted_ids,
                    status="measured",
                    checkpoints="",
                    checkpoint_s=checkpoint,
                    accepted_chars=chars,
                    kept_chars=kept,
                    fraction=np.where(chars > 0, kept / np.maximum(chars, 1), 1.0),
                    **common,
                )
    return EventFrames.from_frames({kind: pd.DataFrame(columns) for kind, columns in rows.items()})
