"""`opportune eval`: quality and offline CPO of configurations on real code, compared paired on the same tasks.

    opportune eval --config A.toml --config B.toml [--corpus PATH ...] [--tasks N] [--quick]
                   [--out DIR] [--seed S] [--run-tests [--test-timeout S] [--test-memory-mb MB]]
                   [--tasks-from DATASET|DB] [--online DB ...]

A configuration is an opportune.toml fragment (``[completion] prompt_strategy = "prefix"``) applied over the
defaults, named after its file; ``NAME=FILE`` names it, and ``builtin:WORDS`` uses a preset such as
``builtin:prefix+ctx256`` (see ``opportune.server.eval.runner.preset_layer``).  ``--quick`` is the CI size: 12 tasks
and about 150 typed characters per configuration, a few minutes on two cores with the embedded model.
``--run-tests`` also runs the corpus's own tests with each completion inserted, sandboxed
(``opportune.server.eval.execution``); it is opt-in because it costs a test run per task and configuration.
``--tasks-from`` takes its tasks from real use (the dataset export, or a store written with store_text): the
code people kept is the expected answer; ``--online`` sets each configuration's offline CPO beside the online
CPO of the arm of the same name (``opportune.server.eval.real_use``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import shlex
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opportune.server.backends.base import BackendError
from opportune.server.eval.sandbox import DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT_S

if TYPE_CHECKING:
    from opportune.server.eval.runner import ConfigResult
    from opportune.server.eval.tasks import Task

log = logging.getLogger(__name__)

QUICK_TASKS = 12
QUICK_TYPED_CHARS = 150
QUICK_SPANS = 3
QUICK_CROSS_FILE = 6
DEFAULT_CROSS_FILE = 40
DEFAULT_TASKS = 100
DEFAULT_TYPED_CHARS = 1000
DEFAULT_SPANS = 10
SMALL_SAMPLE = 10  # units below which bootstrap intervals are not to be trusted


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        action="append",
        required=True,
        metavar="FILE|NAME=FILE|builtin:WORDS",
        help="a configuration to evaluate (give two or more to compare; the first is the baseline)",
    )
    parser.add_argument(
        "--corpus",
        action="append",
        type=Path,
        metavar="PATH",
        help="a folder or file of code nobody here wrote (default: pinned PyPI and npm packages)",
    )
    parser.add_argument(
        "--tasks", type=int, help=f"quality tasks (default {DEFAULT_TASKS}; --quick {QUICK_TASKS})"
    )
    parser.add_argument(
        "--cross-file",
        type=int,
        metavar="N",
        help="tasks whose truth uses a name defined in another file of the project, with the files an editor "
        f"would have open (default {DEFAULT_CROSS_FILE}; --quick {QUICK_CROSS_FILE}; 0: none)",
    )
    parser.add_argument(
        "--typing-chars",
        type=int,
        help=f"characters typed per configuration (default {DEFAULT_TYPED_CHARS}; --quick {QUICK_TYPED_CHARS}; 0: no typing)",
    )
    parser.add_argument(
        "--spans", type=int, help=f"typing spans (default {DEFAULT_SPANS}; --quick {QUICK_SPANS})"
    )
    parser.add_argument("--keys-per-second", type=float, default=6.5, help="typing speed (default 6.5)")
    parser.add_argument(
        "--quick", action="store_true", help="the CI size: a few minutes for two configurations"
    )
    parser.add_argument(
        "--tasks-from",
        type=Path,
        metavar="DATASET|DB",
        help="tasks from real use: a dataset (opportune export --format dataset) or a store with store_text; "
        "the code kept is the expected answer (no corpus unless --corpus is given too)",
    )
    parser.add_argument(
        "--online",
        action="append",
        type=Path,
        metavar="DB",
        help="telemetry store(s): show each configuration's offline CPO beside the online CPO of its arm",
    )
    parser.add_argument("--out", type=Path, help="report folder (default ./opportune-eval-<time>)")
    parser.add_argument("--seed", type=int, default=0, help="task and typing seed (default 0)")
    parser.add_argument("--model", type=Path, help="a GGUF file for every configuration that names none")
    parser.add_argument("--backend", choices=["llama", "fake"], help="fake is for testing the harness only")
    parser.add_argument("--threads", type=int, help="CPU threads for the model")
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help=argparse.SUPPRESS,  # <1 shrinks the typist's pauses: for tests of the harness, never for numbers
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "--run-tests",
        action="store_true",
        help="also run the corpus's tests with each completion inserted (sandboxed, slow; Python only)",
    )
    parser.add_argument(
        "--test-timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        metavar="SECONDS",
        help=f"wall-clock limit of one test run (default {DEFAULT_TIMEOUT_S:g})",
    )
    parser.add_argument(
        "--test-memory-mb",
        type=int,
        default=DEFAULT_MEMORY_MB,
        metavar="MB",
        help=f"address-space limit of one test run (default {DEFAULT_MEMORY_MB})",
    )


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    model: dict[str, Any] = {}
    if args.model:
        model["path"] = str(args.model)
    if args.backend:
        model["backend"] = args.backend
    if args.threads:
        model["threads"] = args.threads
    return {"model": model} if model else {}


def _machine() -> str:
    return f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}"


async def _run(args: argparse.Namespace) -> int:
    from opportune.server.eval.corpus import CorpusError, load_corpus
    from opportune.server.eval.report import RunInfo, write_report
    from opportune.server.eval.runner import QUALITY_DEADLINE_MS, ConfigError, evaluate, load_configuration
    from opportune.server.eval.tasks import sample_spans, sample_tasks
    from opportune.server.eval.typing import TypingModel

    started = time.perf_counter()
    started_at = datetime.now(UTC)
    if args.test_timeout <= 0 or args.test_memory_mb <= 0:
        print("opportune eval: --test-timeout and --test-memory-mb must be positive", file=sys.stderr)
        return 2
    try:
        configs = [load_configuration(spec) for spec in args.config]
    except ConfigError as e:
        print(f"opportune eval: {e}", file=sys.stderr)
        return 2
    names = [c.name for c in configs]
    if len(set(names)) != len(names):
        print(
            f"opportune eval: configuration names must differ (got {', '.join(names)}); use NAME=FILE",
            file=sys.stderr,
        )
        return 2
    n_tasks = args.tasks if args.tasks is not None else (QUICK_TASKS if args.quick else DEFAULT_TASKS)
    typed = (
        args.typing_chars
        if args.typing_chars is not None
        else (QUICK_TYPED_CHARS if args.quick else DEFAULT_TYPED_CHARS)
    )
    n_spans = args.spans if args.spans is not None else (QUICK_SPANS if args.quick else DEFAULT_SPANS)
    real_tasks: list[Task] = []
    if args.tasks_from is not None:
        from opportune.server.eval.real_use import RealUseError, load_records, tasks_from_records

        try:
            records = load_records(args.tasks_from)
        except RealUseError as e:
            print(f"opportune eval: {e}", file=sys.stderr)
            return 2
        real_tasks = tasks_from_records(records)[: args.tasks] if args.tasks else tasks_from_records(records)
        if not real_tasks:
            print(
                f"opportune eval: --tasks-from {args.tasks_from}: none of its {len(records)} records has kept "
                "text measured at a checkpoint",
                file=sys.stderr,
            )
            return 2
        if not args.corpus:
            n_tasks = 0  # no corpus to sample from: the real-use tasks only
    try:
        files, corpus = (
            load_corpus(args.corpus or (), warn=lambda m: print(f"opportune eval: {m}", file=sys.stderr))
            if args.tasks_from is None or args.corpus
            else ([], [])
        )
    except CorpusError as e:
        print(f"opportune eval: {e}", file=sys.stderr)
        return 2
    if real_tasks:
        corpus = [*corpus, f"real use: {args.tasks_from} ({len(real_tasks)} tasks, the code kept as truth)"]
    tasks = real_tasks + sample_tasks(files, n_tasks, args.seed)
    n_cross = (
        args.cross_file
        if args.cross_file is not None
        else (QUICK_CROSS_FILE if args.quick else DEFAULT_CROSS_FILE)
    )
    if n_cross > 0 and files:
        from opportune.server.eval.crossfile import sample_cross_file_tasks

        tasks += sample_cross_file_tasks(files, n_cross, args.seed)
    spans = sample_spans(files, typed, n_spans, args.seed) if typed > 0 and files else []
    if real_tasks and not files and typed > 0:
        from opportune.server.eval.real_use import spans_from_tasks

        spans = spans_from_tasks(real_tasks, n_spans)  # the kept code, typed where it was written
    if not tasks and not spans:
        print("opportune eval: the corpus gave no tasks", file=sys.stderr)
        return 2
    out: Path = args.out or Path(f"opportune-eval-{datetime.now():%Y%m%d-%H%M%S}")
    out.mkdir(parents=True, exist_ok=True)
    print(
        f"opportune eval: {len(files)} files, {len(tasks)} tasks, {len(spans)} typing spans "
        f"({sum(len(s.text) for s in spans)} chars); {len(configs)} configurations -> {out}",
        file=sys.stderr,
    )
    typing = TypingModel(keys_per_second=args.keys_per_second, seed=args.seed)
    results = []
    for config in configs:
        try:
            result = await evaluate(
                config,
                tasks,
                spans,
                out / "telemetry",
                overrides=_overrides(args),
                typing=typing,
                time_scale=args.time_scale,
                show_progress=not args.no_progress,
            )
        except BackendError as e:
            print(f"opportune eval: {config.name}: {e}", file=sys.stderr)
            return 2
        print(f"opportune eval: {config.name} done in {result.seconds:.0f} s", file=sys.stderr)
        results.append(result)
    test_limits = ""
    if args.run_tests and tasks:
        test_limits = _run_tests(args, tasks, results)
    info = RunInfo(
        command=shlex.join(["opportune", *sys.argv[1:]]),
        corpus=corpus,
        seed=args.seed,
        tasks=len(tasks),
        spans=len(spans),
        typed_chars=sum(len(s.text) for s in spans),
        keys_per_second=args.keys_per_second,
        model=", ".join(sorted({r.model_id for r in results})),
        machine=_machine(),
        started=started_at.strftime("%Y-%m-%d %H:%M UTC"),
        seconds=time.perf_counter() - started,
        notes=[
            f"Quality: one invoked request per task with a deadline of {QUALITY_DEADLINE_MS / 1000:g} s, so it "
            "measures what the model and the prompt can do; speed is measured by the typing.",
            "Context: each task's project folder is the workspace; cross-file tasks open the imported files and "
            "two files of the project viewed before (opened and closed) first, as an editor would have them.",
            (
                "Typing: real time on the real model (server.eval.typing.replay), events recorded by the engine "
                "and read back with telemetry.cpo, the code of the online report."
                if spans
                else "Typing: not run (no spans typed), so no funnel or CPO."
            ),
            "Intervals: paired bootstrap over tasks (quality) and over typed spans (funnel ratios), percentile, "
            f"seed {args.seed}.  With few tasks or spans they are wide: read them before the point estimates.",
        ],
        tests_run=bool(args.run_tests and tasks),
        test_limits=test_limits,
    )
    if info.tests_run:
        from opportune.server.eval.execution import MAX_TEST_FILES

        info.notes.append(
            "Tests: each Python completion written into a copy of its project, the test files that import the "
            "edited module run (those passing on the untouched code, at most "
            f"{MAX_TEST_FILES} per module) with the interpreter's own pytest plugins off; tasks with no such "
            "test are not counted.  A pass says the tests did not notice a difference, not that the "
            "completion is right: how much that means depends on how well the module is tested."
        )
    else:
        info.notes.append("Tests of the corpus were not run with the completions inserted (see --run-tests).")
    if len(tasks) < SMALL_SAMPLE or (spans and len(spans) < SMALL_SAMPLE):
        info.notes.append(
            f"Small sample ({len(tasks)} tasks, {len(spans)} spans): a percentile bootstrap over fewer than "
            f"{SMALL_SAMPLE} units gives intervals that are too narrow; read these as descriptive, not as a verdict."
        )
    if args.time_scale != 1.0:
        info.notes.append(
            f"time scale {args.time_scale}: typing pauses were shortened; latency numbers are not real"
        )
    report = write_report(results, info, out)
    if args.online:
        from opportune.server.eval.real_use import online_comparison
        from opportune.telemetry.store import StoreError

        offline = {r.config.name: (r.typing.funnel.cpo if r.typing is not None else None) for r in results}
        try:
            section = online_comparison(offline, args.online)
        except StoreError as e:
            print(f"opportune eval: --online: {e}", file=sys.stderr)
            return 2
        with report.open("a", encoding="utf-8") as f:
            f.write("\n" + section)
    print(f"opportune eval: report in {report}", file=sys.stderr)
    print(report.read_text())
    return 0


def _run_tests(args: argparse.Namespace, tasks: Sequence[Task], results: Sequence[ConfigResult]) -> str:
    """Fill each result's ``tests``; returns the limits as the report states them."""
    from opportune.server.eval.corpus import roots_with_tests
    from opportune.server.eval.execution import ExecutionLimits, run_task_tests
    from opportune.server.eval.runner import _progress
    from opportune.server.eval.sandbox import network_isolation

    limits = ExecutionLimits(timeout_s=args.test_timeout, memory_mb=args.test_memory_mb)
    trees = roots_with_tests(args.corpus or (), warn=lambda m: print(f"opportune eval: {m}", file=sys.stderr))
    started = time.perf_counter()
    with _progress(len(tasks), "tests", not args.no_progress, "task") as bar:
        outcomes = run_task_tests(
            tasks,
            {r.config.name: [t.prediction for t in r.tasks] for r in results},
            trees,
            limits,
            progress=lambda: bar.update(1),
        )
    for result in results:
        result.tests = outcomes[result.config.name]
    print(f"opportune eval: tests done in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return (
        f"{limits.timeout_s:g} s wall clock, {limits.memory_mb} MB address space, no network "
        f"({network_isolation()}), at most {limits.max_test_files} test files per module"
    )


def run(args: argparse.Namespace) -> int:
    # llama.cpp and tqdm both talk on stderr; the report goes to stdout so it can be piped.
    try:
        return asyncio.run(_run(args))
    except KeyboardInterrupt:
        return 130
