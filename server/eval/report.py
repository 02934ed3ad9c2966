"""The comparison report: a markdown table, PNG plots and the raw results, paired on the same tasks.

The first configuration is the baseline; every other one is compared with it (B − A) with paired bootstrap
intervals (``opportune.server.eval.stats``).  Files written to the output folder:

- ``report.md``: a verdict line per compared configuration (better / worse / cannot tell yet, on CPO and
  exact match, with the interval and about how many spans or tasks would resolve it), then the tables
  (quality overall and by task kind, the corpus's tests with each completion
  inserted when ``--run-tests`` was given, the typing funnel and CPO, latency);
- ``differences.png``: each configuration minus the baseline with its 95% interval (CPO, exact match,
  edit similarity); ``quality_by_kind.png`` and ``cpo_funnel.png`` with 95% error bars; ``latency.png``
  (matplotlib, Agg backend: no display);
- ``results.json``: everything in the tables, machine-readable;
- ``tasks.jsonl``: every task with the truth and each configuration's suggestion, for reading by eye.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from opportune.server.eval.execution import exclusion_reasons, pass_rate
from opportune.server.eval.metrics import LOWER_IS_BETTER, METRIC_NAMES
from opportune.server.eval.runner import ConfigResult
from opportune.server.eval.stats import (
    Decision,
    Interval,
    decide,
    format_interval,
    mean_interval,
    paired_mean_difference,
    paired_ratio_difference,
    ratio_interval,
)
from opportune.server.eval.tasks import ALL_KINDS as KINDS
from opportune.telemetry.cpo import CPO_RATIO, FACTORS, Funnel
from opportune.telemetry.numbers import percentile

FUNNEL_METRICS: dict[str, tuple[str, str]] = {**FACTORS, "cpo": CPO_RATIO}
FUNNEL_LABELS = {
    "attempt_rate": "attempt rate",
    "feedback_rate": "feedback rate",
    "acceptance_rate": "acceptance rate",
    "tokens_per_accept": "tokens per accept",
    "chars_per_token": "chars per token",
    "cpo": "**CPO** (chars per opportunity)",
}


@dataclass
class RunInfo:
    """What the report says about how it was made."""

    command: str
    corpus: list[str]
    seed: int
    tasks: int
    spans: int
    typed_chars: int
    keys_per_second: float
    model: str
    machine: str
    started: str
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    tests_run: bool = False  # --run-tests: the corpus's tests were run with each completion inserted
    test_limits: str = ""  # e.g. "60 s, 1024 MB, unshare --net + python audit hook"


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def metric_values(
    result: ConfigResult, metric: str, kind: str | None = None, language: str | None = None
) -> list[float]:
    return [
        getattr(t.scores, metric)
        for t in result.tasks
        if (kind is None or t.kind == kind) and (language is None or t.language == language)
    ]


def cross_file_section(results: Sequence[ConfigResult], seed: int) -> list[str]:
    """Cross-file tasks per language (and all), each configuration against the first, paired."""
    base, others = results[0], results[1:]
    languages = sorted({t.language for t in base.tasks if t.kind == "cross_file"})
    if not languages:
        return []
    n_all = sum(1 for t in base.tasks if t.kind == "cross_file")
    out = [
        "",
        f"### Cross-file tasks ({n_all}: the truth uses a name defined in another file of the project)",
        "",
    ]
    header = ["language", "n", "metric", *[r.config.name for r in results]]
    header += [f"{r.config.name} − {base.config.name} [95% CI]" for r in others]
    rows = []
    for language in [*languages, None]:
        n = len(metric_values(base, "exact_match", "cross_file", language))
        for metric in ("exact_match", "edit_similarity"):
            row = [language or "**all**", str(n), metric.replace("_", " ")]
            row += [_fmt(_mean(metric_values(r, metric, "cross_file", language))) for r in results]
            for r in others:
                a = metric_values(base, metric, "cross_file", language)
                b = metric_values(r, metric, "cross_file", language)
                row.append(format_interval(paired_mean_difference(a, b, seed=seed)) if n >= 2 else "n/a")
            rows.append(row)
    return out + _table(header, rows)


def quality_differences(base: ConfigResult, other: ConfigResult, seed: int) -> dict[str, Interval]:
    if [t.task_id for t in base.tasks] != [t.task_id for t in other.tasks]:
        raise ValueError("configurations were run on different tasks; the comparison would not be paired")
    return {
        m: paired_mean_difference(metric_values(base, m), metric_values(other, m), seed=seed)
        for m in METRIC_NAMES
    }


def tests_values(result: ConfigResult) -> list[float]:
    """1.0 passed / 0.0 failed per task that counts (the same tasks for every configuration)."""
    return [v for v in (t.value for t in result.tests) if v is not None]


def tests_difference(base: ConfigResult, other: ConfigResult, seed: int) -> Interval:
    if [t.task_id for t in base.tests] != [t.task_id for t in other.tests] or [
        t.runnable for t in base.tests
    ] != [t.runnable for t in other.tests]:
        raise ValueError("configurations' tests ran on different tasks; the comparison would not be paired")
    return paired_mean_difference(tests_values(base), tests_values(other), seed=seed)


def _tests_section(results: Sequence[ConfigResult], info: RunInfo) -> list[str]:
    base, others = results[0], results[1:]
    if not info.tests_run:
        return [
            "",
            "## Tests pass",
            "",
            "Not run: the corpus's tests are run with each completion inserted only with `--run-tests` (slow).",
        ]
    names = [r.config.name for r in results]
    diff_headers = [f"{r.config.name} − {base.config.name} [95% CI]" for r in others]
    rates = [pass_rate(r.tests) for r in results]
    head = rates[0]
    out = ["", f"## Tests pass ({head.runnable} of {head.tasks} tasks runnable, paired)", ""]
    if info.test_limits:
        out += [f"Each run: {info.test_limits}.", ""]
    blank = ["" for _ in others]
    rows = [
        ["tasks whose tests ran", *[str(x.runnable) for x in rates], *blank],
        ["passed", *[str(x.passed) for x in rates], *blank],
        ["failed", *[str(x.failed) for x in rates], *blank],
        ["of which timed out", *[str(x.timed_out) for x in rates], *blank],
        ["of which out of memory", *[str(x.out_of_memory) for x in rates], *blank],
    ]
    row = ["**tests pass rate** ↑", *[_fmt(x.rate) for x in rates]]
    row += [format_interval(tests_difference(base, r, info.seed)) for r in others]
    rows.append(row)
    out += _table(["", *names, *diff_headers], rows)
    reasons = exclusion_reasons(base.tests)
    if reasons:
        out += ["", "Not counted: " + "; ".join(f"{why}: {n}" for why, n in reasons.items()) + "."]
    return out


def _tests_json(result: ConfigResult, info: RunInfo) -> dict[str, Any] | None:
    if not info.tests_run:
        return None
    rate = pass_rate(result.tests)
    return {
        **asdict(rate),
        "runnable": rate.runnable,
        "pass_rate": rate.rate,
        "excluded": exclusion_reasons(result.tests),
    }


def funnel_column(spans: Sequence[Any], name: str) -> list[float]:
    return [float(getattr(s.funnel, name)) for s in spans]


def typing_differences(base: ConfigResult, other: ConfigResult, seed: int) -> dict[str, Interval]:
    if [s.span_id for s in base.spans] != [s.span_id for s in other.spans]:
        raise ValueError("configurations typed different spans; the comparison would not be paired")
    out = {}
    for metric, (num, den) in FUNNEL_METRICS.items():
        out[metric] = paired_ratio_difference(
            funnel_column(base.spans, num),
            funnel_column(base.spans, den),
            funnel_column(other.spans, num),
            funnel_column(other.spans, den),
            seed=seed,
        )
    return out


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def verdicts(base: ConfigResult, other: ConfigResult, seed: int) -> list[Decision]:
    """The eval's decision on ``other`` against ``base``: CPO (paired by span), then exact match (by task)."""
    out: list[Decision] = []
    if base.spans and other.spans:
        out.append(decide(typing_differences(base, other, seed)["cpo"], "CPO", "spans"))
    if base.tasks:
        out.append(decide(quality_differences(base, other, seed)["exact_match"], "exact match", "tasks"))
    return out


def _verdict_section(results: Sequence[ConfigResult], info: RunInfo) -> list[str]:
    base = results[0]
    out = ["", "## Verdict", ""]
    for r in results[1:]:
        decisions = verdicts(base, r, info.seed)
        if not decisions:
            out.append(f"- **{r.config.name}** vs {base.config.name}: nothing to compare")
            continue
        parts = "; ".join(f"{d.metric}: {d.describe()}" for d in decisions)
        out.append(f"- **{r.config.name}** vs {base.config.name}: {parts}")
    out += [
        "",
        "Better or worse: the paired 95% bootstrap interval of the difference excludes zero.  "
        '"Cannot tell yet" gives about how many spans or tasks would narrow the interval to the difference '
        "seen (the width shrinks as 1/sqrt(n)).",
    ]
    return out


def _typing_funnel(result: ConfigResult) -> Funnel:
    return result.typing.funnel if result.typing is not None else Funnel()


def render_markdown(results: Sequence[ConfigResult], info: RunInfo) -> str:
    base = results[0]
    others = results[1:]
    names = [r.config.name for r in results]
    diff_headers = [f"{r.config.name} − {base.config.name} [95% CI]" for r in others]
    out: list[str] = ["# Opportune offline evaluation", ""]
    out += [
        f"- command: `{info.command}`",
        f"- corpus: {', '.join(info.corpus)}",
        f"- model: {info.model}; machine: {info.machine}; started {info.started}; took {info.seconds / 60:.1f} min",
        f"- seed {info.seed}: {info.tasks} quality tasks; typing: {info.spans} spans, {info.typed_chars} characters"
        f" at {info.keys_per_second:g} keys/s, in real time on the model",
        "",
        "## Configurations",
        "",
    ]
    rows = []
    for r in results:
        diff = r.config.differences()
        shown = ", ".join(f"`{k} = {v!r}`" for k, v in sorted(diff.items()) if not k.startswith("telemetry."))
        rows.append([r.config.name, f"`{r.config.source}`", shown or "defaults"])
    out += _table(["name", "from", "settings that differ from the defaults"], rows)
    if others:
        out += _verdict_section(results, info)

    if base.tasks:
        out += ["", f"## Quality ({len(base.tasks)} tasks, paired)", ""]
        qdiffs = [quality_differences(base, r, info.seed) for r in others]
        rows = []
        for m in METRIC_NAMES:
            arrow = "↓" if m in LOWER_IS_BETTER else "↑"
            row = [f"{m.replace('_', ' ')} {arrow}"]
            row += [_fmt(_mean(metric_values(r, m))) for r in results]
            row += [format_interval(d[m]) for d in qdiffs]
            rows.append(row)
        latency = ["latency to full answer p50 (ms)"]
        latency += [_fmt(percentile([t.latency_ms for t in r.tasks], 50), 0) for r in results]
        rows.append(latency + ["" for _ in others])
        out += _table(["metric", *names, *diff_headers], rows)

        out += ["", "### By task kind (edit similarity / exact match)", ""]
        rows = []
        for kind in KINDS:
            n = sum(1 for t in base.tasks if t.kind == kind)
            if not n:
                continue
            row = [kind.replace("_", " "), str(n)]
            for r in results:
                es = _mean(metric_values(r, "edit_similarity", kind))
                em = _mean(metric_values(r, "exact_match", kind))
                row.append(f"{_fmt(es, 2)} / {_fmt(em, 2)}")
            rows.append(row)
        out += _table(["kind", "n", *names], rows)
        out += cross_file_section(results, info.seed)

    out += _tests_section(results, info)

    if any(r.spans for r in results):
        out += ["", f"## Typing simulation ({len(base.spans)} spans, paired by span)", ""]
        tdiffs = [typing_differences(base, r, info.seed) if r.spans else {} for r in others]
        rows = []
        for count in ("opportunities", "attempts", "shown", "accepted", "accepted_chars", "accepted_tokens"):
            row = [count.replace("_", " ")] + [str(getattr(_typing_funnel(r), count)) for r in results]
            rows.append(row + ["" for _ in others])
        for metric, label in FUNNEL_LABELS.items():
            row = [label] + [_fmt(getattr(_typing_funnel(r), metric)) for r in results]
            row += [format_interval(d[metric]) if metric in d else "n/a" for d in tdiffs]
            rows.append(row)
        for q in (50, 95):
            row = [f"latency to ghost text p{q} (ms)"]
            row += [_fmt(percentile(r.typing_latencies_ms, q), 0) for r in results]
            rows.append(row + ["" for _ in others])
        out += _table(["", *names, *diff_headers], rows)
        losses = []
        for r in results:
            if r.typing is not None and r.typing.loss_reasons:
                reasons = ", ".join(f"{k} {v}" for k, v in r.typing.loss_reasons.items())
                losses.append(f"- {r.config.name}: attempts without a suggestion: {reasons}")
        if losses:
            out += ["", *losses]

    out += ["", "## Plots", ""]
    if others:
        out += ["![differences from the baseline](differences.png)", ""]
    out += ["![quality by task kind](quality_by_kind.png)", "", "![CPO funnel](cpo_funnel.png)", ""]
    out += ["![latency](latency.png)", ""]
    out += ["## Notes", ""]
    out += [f"- {note}" for note in info.notes]
    for r in results:
        out += [f"- {r.config.name}: {p}" for p in r.problems]
    return "\n".join(out) + "\n"


def _error_bars(intervals: Sequence[Interval]) -> np.ndarray:
    """matplotlib's yerr (2, n): distances below and above each estimate; 0 where there is no interval."""
    below = [(i.estimate - i.low) if i.estimate is not None and i.low is not None else 0.0 for i in intervals]
    above = [
        (i.high - i.estimate) if i.estimate is not None and i.high is not None else 0.0 for i in intervals
    ]
    return np.maximum(np.array([below, above], dtype=float), 0.0)


def _differences_plot(results: Sequence[ConfigResult], seed: int, path: Path) -> Path:
    """Each configuration minus the baseline, with paired 95% intervals, per metric (a forest plot)."""
    import matplotlib.pyplot as plt

    base, others = results[0], results[1:]
    rows: list[tuple[str, Interval]] = []
    for r in others:
        if base.spans and r.spans:
            rows.append((f"{r.config.name}: CPO", typing_differences(base, r, seed)["cpo"]))
        if base.tasks:
            q = quality_differences(base, r, seed)
            rows.append((f"{r.config.name}: exact match", q["exact_match"]))
            rows.append((f"{r.config.name}: edit similarity", q["edit_similarity"]))
    fig, ax = plt.subplots(figsize=(8, 0.5 * max(2, len(rows)) + 1.2), constrained_layout=True)
    for y, (_, interval) in enumerate(rows):
        if interval.estimate is None:
            continue
        colour = (
            "C2"
            if interval.excludes_zero and interval.estimate > 0
            else ("C3" if interval.excludes_zero else "C7")
        )
        err = _error_bars([interval])
        ax.errorbar(interval.estimate, y, xerr=err, fmt="o", color=colour, capsize=4)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(rows)), [label for label, _ in rows])
    ax.invert_yaxis()
    ax.set_xlabel(f"difference from {base.config.name} (paired 95% bootstrap interval)")
    ax.set_title("Better (green), worse (red) or cannot tell yet (grey)")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_plots(results: Sequence[ConfigResult], out: Path, seed: int = 0) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")  # no display: CI and servers
    import matplotlib.pyplot as plt

    names = [r.config.name for r in results]
    written: list[Path] = []
    if len(results) > 1:
        written.append(_differences_plot(results, seed, out / "differences.png"))
    width = 0.8 / max(1, len(results))

    # Quality by task kind.
    kinds = [k for k in KINDS if any(t.kind == k for t in results[0].tasks)]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for ax, metric in zip(axes, ("edit_similarity", "exact_match"), strict=True):
        x = np.arange(len(kinds))
        for i, r in enumerate(results):
            bars = [mean_interval(metric_values(r, metric, k), seed=seed) for k in kinds]
            values = [b.estimate or 0.0 for b in bars]
            ax.bar(
                x + i * width - 0.4 + width / 2,
                values,
                width,
                yerr=_error_bars(bars),
                capsize=3,
                label=r.config.name,
            )
        ax.set_xticks(x, [k.replace("_", " ") for k in kinds], fontsize="small")
        ax.set_ylim(0, 1)
        ax.set_title(metric.replace("_", " "))
    axes[0].legend(fontsize="small")
    fig.suptitle("Quality by task kind, 95% bootstrap intervals (same tasks for every configuration)")
    path = out / "quality_by_kind.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)

    # The CPO funnel, side by side: each stage per opportunity, and CPO itself.
    stages = ("attempts", "shown", "accepted")
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    x = np.arange(len(stages))
    for i, r in enumerate(results):
        f = _typing_funnel(r)
        per_opp = [getattr(f, s) / f.opportunities if f.opportunities else 0.0 for s in stages]
        left.bar(x + i * width - 0.4 + width / 2, per_opp, width, label=r.config.name)
    left.set_xticks(x, [f"{s} / opportunity" for s in stages])
    left.set_title("Funnel (typing simulation)")
    left.legend(fontsize="small")
    cpo_bars = [
        ratio_interval(
            funnel_column(r.spans, "accepted_chars"), funnel_column(r.spans, "opportunities"), seed=seed
        )
        if r.spans
        else Interval(_typing_funnel(r).cpo, None, None, 0)
        for r in results
    ]
    cpo = [b.estimate or 0.0 for b in cpo_bars]
    right.bar(names, cpo, yerr=_error_bars(cpo_bars), capsize=4, color=[f"C{i}" for i in range(len(results))])
    right.set_title("CPO: accepted characters per opportunity (95% interval over spans)")
    for i, v in enumerate(cpo):
        right.annotate(f"{v:.2f}", (i, v), ha="center", va="bottom")
    path = out / "cpo_funnel.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)

    # Latency: time to ghost text while typing, and time to a full answer in the quality phase.
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for i, r in enumerate(results):
        lat = np.sort(np.asarray(r.typing_latencies_ms, dtype=float))
        if lat.size:
            left.step(
                lat, np.arange(1, lat.size + 1) / lat.size, where="post", label=r.config.name, color=f"C{i}"
            )
    left.set_xlabel("ms")
    left.set_ylabel("share of suggestions shown")
    left.set_title("Time to ghost text while typing (ECDF)")
    if any(r.typing_latencies_ms for r in results):
        left.legend(fontsize="small")
    data = [[t.latency_ms for t in r.tasks] or [0.0] for r in results]
    right.boxplot(data, tick_labels=names)
    right.set_ylabel("ms")
    right.set_title("Time to a full answer (quality tasks)")
    path = out / "latency.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
    return written


def _interval_dict(i: Interval) -> dict[str, Any]:
    return asdict(i)


def results_json(results: Sequence[ConfigResult], info: RunInfo) -> dict[str, Any]:
    base = results[0]
    configs = []
    for r in results:
        configs.append(
            {
                "name": r.config.name,
                "source": r.config.source,
                "settings": r.config.differences(),
                "model_id": r.model_id,
                "seconds": r.seconds,
                "store": str(r.store) if r.store else None,
                "quality": {m: _mean(metric_values(r, m)) for m in METRIC_NAMES},
                "quality_by_kind": {
                    k: {m: _mean(metric_values(r, m, k)) for m in METRIC_NAMES}
                    for k in KINDS
                    if any(t.kind == k for t in r.tasks)
                },
                "typing": r.typing.to_dict() if r.typing is not None else None,
                "typing_spans": [
                    {"span": s.span_id, "chars": s.chars, "unit": s.unit, **asdict(s.funnel)} for s in r.spans
                ],
                "typing_latency_ms": {
                    "p50": percentile(r.typing_latencies_ms, 50),
                    "p95": percentile(r.typing_latencies_ms, 95),
                },
                "tests": _tests_json(r, info),
                "problems": r.problems,
            }
        )
    comparisons = []
    for r in results[1:]:
        entry: dict[str, Any] = {"a": base.config.name, "b": r.config.name}
        if base.tasks:
            entry["quality"] = {
                m: _interval_dict(i) for m, i in quality_differences(base, r, info.seed).items()
            }
        if info.tests_run:
            entry["tests_pass"] = _interval_dict(tests_difference(base, r, info.seed))
        if base.spans and r.spans:
            entry["typing"] = {
                m: _interval_dict(i) for m, i in typing_differences(base, r, info.seed).items()
            }
        entry["verdicts"] = [
            {
                "metric": d.metric,
                "call": d.call,
                "unit": d.unit,
                "needed": d.needed,
                **_interval_dict(d.interval),
            }
            for d in verdicts(base, r, info.seed)
        ]
        comparisons.append(entry)
    return {"run": asdict(info), "configurations": configs, "comparisons": comparisons}


def write_report(results: Sequence[ConfigResult], info: RunInfo, out: Path) -> Path:
    """Write every file of the report into ``out``; returns the path of report.md."""
    out.mkdir(parents=True, exist_ok=True)
    write_plots(results, out, seed=info.seed)
    (out / "results.json").write_text(json.dumps(results_json(results, info), indent=2, default=str) + "\n")
    with (out / "tasks.jsonl").open("w") as f:
        for i, task in enumerate(results[0].tasks):
            row: dict[str, Any] = {"task": task.task_id, "kind": task.kind, "truth": task.truth}
            for r in results:
                t = r.tasks[i]
                row[r.config.name] = {"suggestion": t.prediction, **t.scores.as_dict()}
                if r.tests:
                    row[r.config.name]["tests"] = {"status": r.tests[i].status, "detail": r.tests[i].detail}
            f.write(json.dumps(row) + "\n")
    path = out / "report.md"
    path.write_text(render_markdown(results, info))
    return path
