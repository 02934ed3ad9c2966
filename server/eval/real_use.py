"""Evaluation material from real use: tasks from the dataset export, and offline CPO beside online CPO.

``opportune eval --tasks-from PATH`` takes a dataset (``opportune export --format dataset``, JSONL) or a
telemetry store written with ``store_text`` (the dataset is built from it, redacted, on the fly).  Each
record with a measured persistence and kept text becomes a task: the document is the code before the
suggestion, then the code after it; the truth is the text that was there at the last checkpoint (what the
developer kept, edits included), so a configuration is scored on the team's own code against what people
actually kept.

``opportune eval --online DB`` puts the offline CPO of each configuration beside the online CPO of the arm
of the same name in the stores, with its interval over installs, and says whether the two rank the
configurations the same way.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opportune.server.eval.corpus import SourceFile
from opportune.server.eval.tasks import Span, Task

EXTENSIONS = {
    "python": ".py",
    "javascript": ".js",
    "typescript": ".ts",
    "tsx": ".tsx",
    "go": ".go",
    "rust": ".rs",
    "java": ".java",
    "c": ".c",
    "cpp": ".cpp",
}


class RealUseError(ValueError):
    """The records cannot give tasks; the message is one line for people."""


def _is_sqlite(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(16) == b"SQLite format 3\x00"


def load_records(path: Path) -> list[dict[str, Any]]:
    """Dataset records from a JSONL export or, built and redacted now, from a store."""
    if not path.is_file():
        raise RealUseError(f"--tasks-from {path}: no such file")
    if _is_sqlite(path):
        from opportune.telemetry.dataset import DatasetUnavailable, dataset_records
        from opportune.telemetry.store import StoreError, open_events

        try:
            return list(dataset_records(open_events([path])))
        except (DatasetUnavailable, StoreError) as e:
            raise RealUseError(f"--tasks-from {path}: {e}") from None
    records = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                raise RealUseError(f"--tasks-from {path}:{number}: not JSON") from None
            if not isinstance(record, dict) or "suggestion" not in record:
                raise RealUseError(f"--tasks-from {path}:{number}: not a dataset record")
            records.append(record)
    return records


def tasks_from_records(records: Sequence[dict[str, Any]]) -> list[Task]:
    """One task per record whose kept text was measured: prefix + kept + suffix, the kept text held out."""
    tasks: list[Task] = []
    for record in records:
        kept, prefix = record.get("kept_text"), record.get("prefix")
        if not isinstance(kept, str) or not kept.strip() or not isinstance(prefix, str):
            continue
        suffix = record.get("suffix") if isinstance(record.get("suffix"), str) else ""
        language = str(record.get("language") or "plaintext")
        cid = str(record.get("completion_id", len(tasks)))
        file = SourceFile(
            project="real-use",
            relpath=f"{cid[:12]}{EXTENSIONS.get(language, '.txt')}",
            language=language,
            text=prefix + kept + str(suffix),
        )
        cursor = len(prefix)
        tasks.append(Task(f"{file.name}:real_use", "real_use", file, cursor, cursor + len(kept)))
    return tasks


def spans_from_tasks(tasks: Sequence[Task], count: int) -> list[Span]:
    """Typing spans for the simulator from real-use tasks: the kept code typed where it was written, so the
    offline CPO of real use is measured on the same places as its quality."""
    return [Span(f"{t.task_id}:typed", t.file, t.cursor, t.end) for t in tasks[: max(0, count)]]


def online_comparison(offline_cpo: dict[str, float | None], stores: Sequence[Path]) -> str:
    """Markdown: each configuration's offline CPO beside the online CPO of the arm of the same name."""
    from opportune.telemetry.cpo import funnel_counts
    from opportune.telemetry.experiments import ratio_of_means
    from opportune.telemetry.store import open_events

    units = funnel_counts(open_events(list(stores)), by=["arm", "install_id"])
    lines = [
        "## Offline against online CPO",
        "",
        "| configuration | offline CPO | online CPO [95% CI over installs] | installs |",
        "|---|---:|---:|---:|",
    ]
    online: dict[str, float | None] = {}
    for name, offline in offline_cpo.items():
        arm = units[units["arm"] == name]
        estimate = ratio_of_means(arm["accepted_chars"].to_numpy(), arm["opportunities"].to_numpy(), 1.96)
        online[name] = estimate.value
        interval = (
            f" [{estimate.ci_low:.3f}, {estimate.ci_high:.3f}]"
            if estimate.ci_low is not None and estimate.ci_high is not None
            else ""
        )
        lines.append(
            f"| {name} | {'-' if offline is None else f'{offline:.3f}'} | "
            f"{'no arm of this name' if estimate.value is None else f'{estimate.value:.3f}{interval}'} | {len(arm)} |"
        )
    both = [n for n in offline_cpo if offline_cpo[n] is not None and online.get(n) is not None]
    lines.append("")
    if len(both) < 2:
        lines.append("Fewer than two configurations have both numbers: no ranking to compare.")
    else:
        offline_rank = sorted(both, key=lambda n: -(offline_cpo[n] or 0.0))
        online_rank = sorted(both, key=lambda n: -(online[n] or 0.0))
        same = offline_rank == online_rank
        lines.append(
            f"Ranking offline: {' > '.join(offline_rank)}; online: {' > '.join(online_rank)} -- "
            + ("the offline harness ranks them as real use does." if same else "they disagree.")
        )
    return "\n".join(lines) + "\n"
