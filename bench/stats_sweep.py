"""Simulation check of the experiment analysis: A/A error rates, daily peeking, and power.

    python bench/stats_sweep.py [--runs 400] [--sizes 3,5,10,30,100] [--heterogeneity "all at once"]
                                [--peeking-runs 100] [--power-runs 200] [--out sweep.json]

Every simulated experiment goes through ``analyse_units``, the function ``report`` and the dashboard use,
with per-install latencies (so the guardrails take part in the verdict).  Reported per setting: the share
of A/A runs whose CPO lift interval misses zero, the share whose verdict claims a difference ("ship",
"harm"), and for a true 20% CPO lift the share that says "ship"; each rate
with its Clopper-Pearson 95% interval (statsmodels), so the number of runs shows in the answer.

Peeking: each simulated team of installs is analysed after every day for 30 days, always-valid (the
look's share of alpha, ``PeekingPlan``); a run counts as a false alarm if any look claims a difference.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
from statsmodels.stats.proportion import proportion_confint

from opportune.telemetry.experiments import CLAIMS, ArmResult, PeekingPlan, analyse_units
from opportune.telemetry.simulate import HETEROGENEITY, ArmTruth, cumulative_units, simulate_units

BASE = ArmTruth()
LIFT_20 = replace(BASE, acceptance_rate=BASE.acceptance_rate * 1.2)  # CPO x1.2 exactly


def rate(hits: int, runs: int) -> dict[str, Any]:
    low, high = proportion_confint(hits, runs, alpha=0.05, method="beta") if runs else (None, None)
    return {"hits": hits, "runs": runs, "rate": hits / runs if runs else None, "ci95": [low, high]}


def treatment_result(units: pd.DataFrame, **kwargs: Any) -> ArmResult | None:
    """The treatment arm's result, or None when an arm has no installs with events (no comparison)."""
    active = units[units["opportunities"] > 0]
    if active["arm"].nunique() < 2:
        return None
    return analyse_units(active, "sim", "control", **kwargs).arm("treatment")


def misses_zero(result: ArmResult | None) -> bool:
    if result is None:
        return False
    c = result.comparisons["cpo"]
    if c.relative_ci_low is None:
        return False
    return c.relative_ci_low > 0 or (c.relative_ci_high is not None and c.relative_ci_high < 0)


def fixed(
    truth: ArmTruth,
    size: int,
    runs: int,
    heterogeneity: str,
    rng: np.random.Generator,
    *,
    final_look: int | None = None,
) -> dict[str, Any]:
    """Fixed-horizon runs; with ``final_look`` also the always-valid verdict on the plan's last day."""
    arms = {"control": BASE, "treatment": truth}
    miss = claims = ships = final_ships = 0
    verdicts: dict[str, int] = {}
    for _ in range(runs):
        units = simulate_units(arms, size, rng, heterogeneity=HETEROGENEITY[heterogeneity], latency=True)
        result = treatment_result(units, intervals=["cpo"])
        verdict = result.verdict if result is not None else "too few installs to tell"
        verdicts[verdict] = verdicts.get(verdict, 0) + 1
        miss += misses_zero(result)
        claims += verdict in CLAIMS
        ships += verdict == "ship"
        if final_look is not None:
            plan = PeekingPlan(horizon_days=final_look)
            last = treatment_result(units, intervals=False, peeking=plan, look_day=final_look)
            final_ships += last is not None and last.verdict == "ship"
    extra = {"ship_always_valid_last_day": rate(final_ships, runs)} if final_look is not None else {}
    return {
        **extra,
        "cpo_interval_misses_zero": rate(miss, runs),
        "claims_a_difference": rate(claims, runs),
        "ship": rate(ships, runs),
        "verdicts": verdicts,
    }


def peeking(size: int, runs: int, days: int, heterogeneity: str, rng: np.random.Generator) -> dict[str, Any]:
    plan = PeekingPlan(horizon_days=days)
    arms = {"control": BASE, "treatment": BASE}
    alarms = 0
    first_alarm_days: list[int] = []
    for _ in range(runs):
        daily = simulate_units(
            arms, size, rng, heterogeneity=HETEROGENEITY[heterogeneity], latency=True, days=days
        )
        for day in range(1, days + 1):
            units = cumulative_units(daily, day, rng)
            result = treatment_result(units, intervals=False, peeking=plan, look_day=day)
            if result is not None and result.verdict in CLAIMS:
                alarms += 1
                first_alarm_days.append(day)
                break
    return {"any_look_claims": rate(alarms, runs), "first_alarm_days": first_alarm_days}


def timed(label: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    start = time.monotonic()
    out = fn()
    out["seconds"] = round(time.monotonic() - start, 1)
    print(f"{label}: {json.dumps({k: v for k, v in out.items() if k != 'first_alarm_days'})}", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=400, help="A/A runs per size")
    parser.add_argument("--sizes", default="3,5,10,30,100", help="installs per arm")
    parser.add_argument("--heterogeneity", action="append", help=f"one of {', '.join(HETEROGENEITY)}")
    parser.add_argument("--peeking-runs", type=int, default=100)
    parser.add_argument("--peeking-sizes", default="10,30")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--power-runs", type=int, default=200)
    parser.add_argument("--power-sizes", default="30,60,100")
    parser.add_argument("--seed", type=int, default=20261202)
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    settings = args.heterogeneity or ["all at once"]
    results: dict[str, Any] = {"seed": args.seed, "aa": {}, "peeking": {}, "power": {}}
    for h in settings if args.runs else []:
        for size in sizes:
            key = f"{h} / {size} per arm"
            results["aa"][key] = timed(f"A/A {key}", partial(fixed, BASE, size, args.runs, h, rng))
    for size in [int(s) for s in args.peeking_sizes.split(",") if s] if args.peeking_runs else []:
        key = f"{settings[0]} / {size} per arm / {args.days} days"
        results["peeking"][key] = timed(
            f"peeking A/A {key}",
            partial(peeking, size, args.peeking_runs, args.days, settings[0], rng),
        )
    power = [("moderate", int(s)) for s in args.power_sizes.split(",") if s]
    power += [("low spread", 30), (settings[0], 30)]
    for h, size in power if args.power_runs else []:
        key = f"{h} / {size} per arm"
        results["power"][key] = timed(
            f"20% lift {key}",
            partial(fixed, LIFT_20, size, args.power_runs, h, rng, final_look=args.days),
        )
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
