"""``opportune report``: the funnel, the five factors, CPO, latency and losses; or an experiment's verdict.

    opportune report [--db PATH ...] [--since 7d|2025-01-31] [--by language|arm|model|install|day] [--json]
    opportune report --experiment NAME [--control ARM] [--weights A=1,B=1] [--db PATH ...] [--json]

Several ``--db`` are analysed as one (one store per install, merged without double counting).  Text is
an aligned table for people; ``--json`` prints the same numbers for machines.  A missing or corrupt
store, or a bad argument, prints one line on stderr and exits with status 2.

The server's CLI wires this module as its ``report`` subcommand: ``add_arguments(parser)`` then
``run(args)``.  ``build_report``, ``render_summary`` and ``render_experiment`` are the pure parts.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from opportune.telemetry.cpo import METRICS, by_context_source, parse_since, summarise
from opportune.telemetry.experiments import ExperimentAnalysis, PeekingPlan, analyse
from opportune.telemetry.frames import EventFrames, json_safe
from opportune.telemetry.numbers import (
    DASH,
    fmt_count,
    fmt_metric,
    fmt_ms,
    fmt_p,
    fmt_relative,
    fmt_share,
    p_clause,
)
from opportune.telemetry.store import StoreError, open_events, store_paths

BY_CHOICES = ("language", "arm", "model", "install", "day")

METRIC_LABELS: dict[str, str] = {
    "attempt_rate": "attempt rate",
    "feedback_rate": "feedback rate",
    "acceptance_rate": "acceptance rate",
    "tokens_per_accept": "tokens/accept",
    "chars_per_token": "chars/token",
    "cpo": "CPO",
}


# --- arguments -----------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``report`` options to ``parser`` (a subcommand parser of the CLI)."""
    parser.add_argument(
        "--db",
        action="append",
        type=Path,
        metavar="PATH",
        help="telemetry store; repeat to merge several (one per install). Default: the user's store",
    )
    parser.add_argument(
        "--since", metavar="WHEN", help="only events since an ISO date (2025-01-31) or an age (7d, 24h)"
    )
    parser.add_argument("--by", choices=BY_CHOICES, help="one row per language, arm, model, install or day")
    parser.add_argument("--json", action="store_true", help="print JSON for machines instead of a table")
    parser.add_argument("--experiment", metavar="NAME", help="analyse this experiment arm by arm")
    parser.add_argument(
        "--control", metavar="ARM", help="control arm (default: the first declared, or 'control')"
    )
    parser.add_argument(
        "--target-lift",
        type=float,
        default=0.10,
        metavar="FRACTION",
        help="the CPO lift the team cares about, for sizing: 0.10 = 10%% (default)",
    )
    parser.add_argument(
        "--fixed-horizon",
        action="store_true",
        help="one planned look: fixed-horizon intervals instead of always-valid ones (not for daily peeking)",
    )
    parser.add_argument(
        "--horizon-days",
        type=int,
        default=PeekingPlan().horizon_days,
        metavar="DAYS",
        help="the planned length of the experiment in days with data (always-valid looks; default 30)",
    )
    parser.add_argument(
        "--weights",
        metavar="ARM=W,...",
        help="declared arm weights for the sample-ratio check, e.g. A=1,B=1 (default: equal weights)",
    )


def parse_weights(text: str) -> dict[str, float]:
    """``A=1,B=2`` -> {"A": 1.0, "B": 2.0}, in the order given."""
    weights: dict[str, float] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = -1.0
        if not sep or not name.strip() or weight < 0:
            raise ValueError(
                f"--weights {text!r}: expected ARM=WEIGHT pairs separated by commas, e.g. A=1,B=1"
            )
        weights[name.strip()] = weight
    return weights


def _target_lift(value: float) -> float:
    if not 0 < value < 10:
        raise ValueError(f"--target-lift {value}: expected a fraction such as 0.10 for 10%")
    return value


def _horizon(value: int) -> int:
    if not 1 <= value <= 3650:
        raise ValueError(f"--horizon-days {value}: expected a whole number of days from 1 to 3650")
    return value


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run ``opportune report`` with parsed arguments; 0 on success, 2 on a user-facing error."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        report = load_report(
            args.db,
            since=args.since,
            by=args.by,
            experiment=args.experiment,
            control=getattr(args, "control", None),
            weights=parse_weights(args.weights) if getattr(args, "weights", None) else None,
            target_lift=_target_lift(getattr(args, "target_lift", 0.10)),
            peeking=None
            if getattr(args, "fixed_horizon", False)
            else PeekingPlan(
                horizon_days=_horizon(getattr(args, "horizon_days", PeekingPlan().horizon_days))
            ),
        )
    except (StoreError, ValueError) as exc:  # AnalysisError is a ValueError
        print(f"opportune report: error: {exc}", file=err)
        return 2
    if args.json:
        out.write(json.dumps(report, indent=2, allow_nan=False) + "\n")
    else:
        out.write(render(report) + "\n")
    return 0


def load_report(
    paths: Sequence[Path | str] | None,
    *,
    since: str | None = None,
    by: str | None = None,
    experiment: str | None = None,
    control: str | None = None,
    weights: Mapping[str, float] | None = None,
    target_lift: float = 0.10,
    peeking: PeekingPlan | None = PeekingPlan(),  # noqa: B008 -- a frozen dataclass
) -> dict[str, Any]:
    """The report of stores (the default store when ``paths`` is empty), as JSON-ready data.

    ``since`` is as on the command line (``7d``, ``2025-01-31``).  Raises ``StoreError`` for a missing
    or corrupt store and ``ValueError`` for a bad argument or an experiment without events.
    """
    since_ts = parse_since(since) if since else None
    resolved = store_paths(paths)
    frames = open_events(resolved, since=since_ts)
    return build_report(
        frames,
        paths=resolved,
        since=since_ts,
        by=by,
        experiment=experiment,
        control=control,
        weights=weights,
        target_lift=target_lift,
        peeking=peeking,
    )


def render_text(paths: Sequence[Path | str] | None, **kwargs: Any) -> str:
    """``load_report`` rendered for people (the text ``opportune report`` prints)."""
    return render(load_report(paths, **kwargs))


def render_json(paths: Sequence[Path | str] | None, **kwargs: Any) -> dict[str, Any]:
    """``load_report`` as data (what ``opportune report --json`` prints)."""
    return load_report(paths, **kwargs)


# --- the report as data --------------------------------------------------------------------------------


def build_report(
    frames: EventFrames,
    *,
    paths: Sequence[Path] = (),
    since: float | None = None,
    by: str | None = None,
    experiment: str | None = None,
    control: str | None = None,
    weights: Mapping[str, float] | None = None,
    target_lift: float = 0.10,
    peeking: PeekingPlan | None = PeekingPlan(),  # noqa: B008 -- a frozen dataclass
    now: float | None = None,
) -> dict[str, Any]:
    """The report as JSON-ready data: the summary groups, or the experiment analysis.

    ``now`` (default: the current time) decides which persistence checkpoints are still pending."""
    report: dict[str, Any] = {
        "stores": [str(p) for p in paths],
        "since": _iso(since) if since is not None else None,
        "events": len(frames),
        "installs": len(frames.installs()),
    }
    if experiment:
        analysis = analyse(
            frames, experiment, control, weights=weights, target_lift=target_lift, peeking=peeking, now=now
        )
        report["experiment"] = {**analysis.to_dict(), "intervals": analysis.describe_intervals()}
    else:
        report["by"] = by
        report["groups"] = [s.to_dict() for s in summarise(frames, [by] if by else [], now=now)]
        report["context_sources"] = by_context_source(frames)
    return json_safe(report)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


# --- formatting ----------------------------------------------------------------------------------------


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> str:
    """An aligned plain-text table; ``align`` has one letter per column, ``l`` or ``r``."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        padded = [
            cell.ljust(w) if a == "l" else cell.rjust(w)
            for cell, w, a in zip(cells, widths, align, strict=True)
        ]
        return "  ".join(padded).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def render(report: Mapping[str, Any]) -> str:
    """The text for people of a report made by ``build_report``."""
    stores = report["stores"]
    head = (
        f"Opportune telemetry: {len(stores)} store{'s' if len(stores) != 1 else ''}, "
        f"{report['events']:,} events, {report['installs']:,} install{'s' if report['installs'] != 1 else ''}"
    )
    if report.get("since"):
        head += f", since {report['since']}"
    if "experiment" in report:
        return head + "\n\n" + render_experiment(report["experiment"])
    summary = render_summary(report["groups"], report.get("by"))
    sources = report.get("context_sources")
    if sources:
        rows = [
            [
                s["source"],
                fmt_count(s["attempts"]),
                f"{s['mean_tokens']:.0f}",
                fmt_count(s["shown"]),
                fmt_count(s["accepted"]),
                fmt_metric("acceptance_rate", s["acceptance_rate"]),
            ]
            for s in sources
        ]
        summary += "\n\nWhat the model saw: prompt tokens and acceptance by context source\n" + format_table(
            ["source", "attempts", "mean tokens", "shown", "accepted", "acceptance"], rows, "lrrrrr"
        )
    return head + "\n\n" + summary


def render_summary(groups: Sequence[Mapping[str, Any]], by: str | None = None) -> str:
    """Funnel, factors and latency per group; then losses, skips and stage times when there are any."""
    label = by or ""

    def name(group: Mapping[str, Any]) -> str:
        if not by:
            return "all"
        value = next(iter(group["group"].values()), "")
        return value or "(none)"

    funnel_rows = [
        [
            name(g),
            *(
                fmt_count(g["funnel"][k])
                for k in (
                    "opportunities",
                    "attempts",
                    "shown",
                    "accepted",
                    "accepted_chars",
                    "accepted_tokens",
                )
            ),
        ]
        for g in groups
    ]
    blocks = [
        "Funnel\n"
        + format_table(
            [label, "opportunities", "attempts", "shown", "accepted", "accepted chars", "accepted tokens"],
            funnel_rows,
            "lrrrrrr",
        )
    ]
    factor_rows = [
        [
            name(g),
            *(fmt_metric(m, g["factors"][m]) for m in METRICS),
            fmt_ms(g["latency_p50_ms"]),
            fmt_ms(g["latency_p95_ms"]),
        ]
        for g in groups
    ]
    blocks.append(
        "Factors (CPO = their product = accepted chars / opportunities)\n"
        + format_table(
            [label, *(METRIC_LABELS[m] for m in METRICS), "p50 ms", "p95 ms"],
            factor_rows,
            "l" + "r" * (len(METRICS) + 2),
        )
    )
    kept = _what_stayed(groups, name, label)
    if kept:
        blocks.append(kept)
    if any(g.get("edits", {}).get("edit_opportunities") for g in groups):
        edit_rows = [
            [
                name(g),
                *(
                    fmt_count(g["edits"][k])
                    for k in ("edit_opportunities", "shown", "accepted", "rejected", "chars_changed")
                ),
                fmt_metric("acceptance_rate", g["edits"]["acceptance_rate"]),
                fmt_metric("cpo", g["edits"]["edit_cpo"]),
                fmt_metric("cpo", g["factors"]["cpo"]),
            ]
            for g in groups
        ]
        blocks.append(
            "Next edits (edit CPO = chars changed by accepted edits / edit opportunities)\n"
            + format_table(
                [
                    label,
                    "edit opportunities",
                    "shown",
                    "accepted",
                    "rejected",
                    "chars changed",
                    "acceptance rate",
                    "edit CPO",
                    "CPO",
                ],
                edit_rows,
                "lrrrrrrrr",
            )
        )
    for title, key, fmt in (
        ("Losses: attempts that showed nothing, by reason", "loss_reasons", fmt_count),
        ("Skipped by trigger rules", "skip_rules", fmt_count),
        ("Median time per stage (ms)", "stage_medians_ms", lambda v: f"{v:.1f}"),
    ):
        block = _breakdown(groups, key, name, label, fmt)
        if block:
            blocks.append(f"{title}\n{block}")
    return "\n\n".join(blocks)


def _checkpoint(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def _what_stayed(
    groups: Sequence[Mapping[str, Any]], name: Callable[[Mapping[str, Any]], str], label: str
) -> str:
    """Keystrokes saved, persisted CPO beside CPO, and the share of accepted characters still there at each
    checkpoint (with how many were measured, unknown, pending); empty when nothing was accepted."""
    if not any(g["funnel"]["accepted"] or g.get("persistence") for g in groups):
        return ""
    checkpoints = sorted({c["checkpoint_s"] for g in groups for c in g.get("persistence", [])})
    rows = []
    for g in groups:
        follow = g.get("follow_up", {})
        by_checkpoint = {c["checkpoint_s"]: c for c in g.get("persistence", [])}
        cells = []
        for checkpoint in checkpoints:
            c = by_checkpoint.get(checkpoint)
            if c is None:
                cells.append(DASH)
                continue
            share = fmt_share(c["survival"])
            cells.append(
                f"{share} ({c['measured']} measured, {c['unknown']} unknown, {c['pending']} pending)"
            )
        rows.append(
            [
                name(g),
                fmt_metric("cpo", g["factors"]["cpo"]),
                fmt_metric("cpo", follow.get("persisted_cpo")),
                fmt_share(follow.get("persistence")),
                DASH
                if follow.get("keystrokes_saved_per_opportunity") is None
                else f"{follow['keystrokes_saved_per_opportunity']:.3f}",
                *cells,
            ]
        )
    return (
        "What stayed: persisted CPO = CPO x the share of accepted characters still there at the last checkpoint"
        " (unknown checkpoints -- document closed, server stopped -- are left out, not counted as lost)\n"
        + format_table(
            [label, "CPO", "persisted CPO", "persistence", "keys saved/opp", *map(_checkpoint, checkpoints)],
            rows,
            "lrrrr" + "l" * len(checkpoints),
        )
    )


def _breakdown(
    groups: Sequence[Mapping[str, Any]],
    key: str,
    name: Callable[[Mapping[str, Any]], str],
    label: str,
    fmt: Callable[[Any], str],
) -> str:
    columns: list[str] = []
    for g in groups:
        columns.extend(c for c in g[key] if c not in columns)
    if not columns:
        return ""
    rows = [[name(g), *(fmt(g[key][c]) if c in g[key] else DASH for c in columns)] for g in groups]
    return format_table([label, *columns], rows, "l" + "r" * len(columns))


def _estimate(name: str, e: Mapping[str, Any]) -> str:
    if e["value"] is None:
        return DASH
    if e["ci_low"] is None:
        return fmt_metric(name, e["value"])
    return (
        f"{fmt_metric(name, e['value'])} [{fmt_metric(name, e['ci_low'])}, {fmt_metric(name, e['ci_high'])}]"
    )


def _lift(c: Mapping[str, Any] | None) -> str:
    """``+12.0% [-3.1%, +30.2%]``; an open end as ``+inf)``: the data cannot rule out any large lift."""
    if not c or c["relative"] is None:
        return DASH
    if c["relative_ci_low"] is None:
        return fmt_relative(c["relative"])
    high = "+inf)" if c.get("unbounded_high") else f"{fmt_relative(c['relative_ci_high'])}]"
    return f"{fmt_relative(c['relative'])} [{fmt_relative(c['relative_ci_low'])}, {high}"


def _change(check: Mapping[str, Any]) -> str:
    """A guardrail's change with its interval: relative for latency, absolute for the error rate."""
    if check["change"] is None:
        return DASH
    if check["name"] == "latency p95 ceiling":
        value = f"{check['change']:.0f} ms"
        if check["change_low"] is not None and check["change_high"] is not None:
            value += f" [{check['change_low']:.0f}, {check['change_high']:.0f}]"
        return value
    fmt = (lambda v: f"{v:+.1%}") if check["name"].startswith("latency") else (lambda v: f"{v:+.2%}")
    text = fmt(check["change"])
    if check["change_low"] is not None:
        high = "+inf)" if check["change_high"] is None else f"{fmt(check['change_high'])}]"
        text += f" [{fmt(check['change_low'])}, {high}"
    return text


def _margin(check: Mapping[str, Any]) -> str:
    if check["name"] == "latency p95 ceiling":
        return f"{check['margin']:.0f} ms"
    return f"+{check['margin']:.0%}" if check["name"].startswith("latency") else f"+{check['margin']:.2%}"


def _sizing(arm: Mapping[str, Any]) -> str:
    size = arm.get("sizing")
    if not size:
        return "needs 2+ installs in each arm"
    target = f"{size['target_lift']:.0%}"
    needed = size["installs_per_arm_needed"]
    need = f"about {needed:,} installs per arm for a {target} lift" if needed else f"unknown for {target}"
    if size["detectable_lift"] is None:
        return f"no lift is detectable at {size['installs_per_arm']:g} installs per arm; {need}"
    return (
        f"detects a {size['detectable_lift']:.0%} lift ({size['power']:.0%} power) at "
        f"{size['installs_per_arm']:g} installs per arm; {need}"
    )


def _level(alpha: float) -> str:
    """The confidence level of a look, e.g. 95% or 99.93%."""
    text = f"{(1 - alpha) * 100:.2f}".rstrip("0").rstrip(".")
    return f"{text}%"


def _interval_kind(a: Mapping[str, Any]) -> str:
    if a.get("interval_kind") == "always-valid":
        return f"always-valid (day {a['look_day']} of {a['horizon_days']})"
    return "fixed-horizon (one planned look)"


def render_experiment(analysis: Mapping[str, Any] | ExperimentAnalysis) -> str:
    """Units and SRM, CPO with lift and verdict per arm, every factor, guardrails, warnings."""
    a = analysis.to_dict() if isinstance(analysis, ExperimentAnalysis) else analysis
    arms = a["arms"]
    control = a["control"]
    srm = a["srm"]
    total_units = sum(arm["units"] for arm in arms)
    lines = [
        f'Experiment "{a["experiment"]}": control {control}, {len(arms)} arms, {total_units:,} installs'
        + (f", p-values Holm-corrected across {len(arms) - 1} comparisons" if a["correction"] else ""),
        f"Intervals: {a.get('intervals') or _interval_kind(a)}",
    ]
    srm_total = max(sum(srm["units"].values()), 1)
    shares = ", ".join(
        f"{arm} {n:,} ({fmt_share(n / srm_total)}, expected {fmt_share(srm['expected_share'][arm])})"
        for arm, n in srm["units"].items()
    )
    if srm["p_value"] is None:
        lines.append(f"Sample ratio: {shares}; not enough data to test")
    else:
        state = "ALARM: sample ratio mismatch" if srm["alarm"] else "ok"
        lines.append(f"Sample ratio: {shares}; chi2 {srm['chi2']:.2f}, {p_clause(srm['p_value'])}: {state}")

    rows = []
    for arm in arms:
        cpo = arm["comparisons"].get("cpo")
        rows.append(
            [
                arm["arm"],
                fmt_count(arm["units"]),
                fmt_count(arm["funnel"]["opportunities"]),
                _estimate("cpo", arm["metrics"]["cpo"]),
                _lift(cpo),
                fmt_p(cpo["p_adjusted"]) if cpo else DASH,
                arm["verdict"],
            ]
        )
    p_header = "p (Holm)" if a["correction"] else "p"
    lift_header = f"lift vs control [{_level(a['alpha_look'])} CI]"
    lines += [
        "",
        format_table(
            ["arm", "units", "opportunities", "CPO [95% CI]", lift_header, p_header, "verdict"],
            rows,
            "lrrllrl",
        ),
    ]
    sizes = [f"  {arm['arm']}: {_sizing(arm)}" for arm in arms if arm["arm"] != control]
    if sizes:
        lines += ["", "What this size can tell (80% power, normal approximation for planning):", *sizes]

    factor_rows = []
    for metric in METRICS:
        for i, arm in enumerate(arms):
            comparison = arm["comparisons"].get(metric)
            log_lift = arm["log_lift"].get(metric)
            factor_rows.append(
                [
                    METRIC_LABELS[metric] if i == 0 else "",
                    arm["arm"],
                    _estimate(metric, arm["metrics"][metric]),
                    _lift(comparison),
                    fmt_p(comparison["p_adjusted"]) if comparison else DASH,
                    DASH if log_lift is None else f"{log_lift:+.3f}",
                ]
            )
    lines += [
        "",
        "Each factor per arm: 95% intervals over installs (Student's t, log or logit scale); lifts by "
        "permutation tests over installs; log lifts add up to CPO's",
        format_table(
            ["metric", "arm", "estimate [95% CI]", lift_header, p_header, "log lift"],
            factor_rows,
            "llllrr",
        ),
    ]

    guard_rows = []
    for arm in arms:
        if arm["arm"] == control:
            guard_rows.append(
                [
                    arm["arm"],
                    "",
                    fmt_ms(arm["latency_p50_ms"]),
                    fmt_ms(arm["latency_p95_ms"]),
                    "",
                    "",
                    "control",
                ]
            )
            continue
        for i, check in enumerate(arm.get("guardrails") or []):
            guard_rows.append(
                [
                    arm["arm"] if i == 0 else "",
                    check["name"],
                    fmt_ms(arm["latency_p50_ms"]) if i == 0 else "",
                    fmt_ms(arm["latency_p95_ms"]) if i == 0 else "",
                    _change(check),
                    _margin(check),
                    check["status"],
                ]
            )
    lines += [
        "",
        "Guardrails: each decided by tests against its margin (breached = significantly beyond it); "
        "latency compares each install's own p50/p95",
        format_table(
            [
                "arm",
                "guardrail",
                "p50 ms",
                "p95 ms",
                f"change [{_level(a['alpha_look'])} CI]",
                "margin",
                "status",
            ],
            guard_rows,
            "llrrlrl",
        ),
    ]
    if a["warnings"]:
        lines += ["", *(f"Warning: {w}" for w in a["warnings"])]
    return "\n".join(lines)
