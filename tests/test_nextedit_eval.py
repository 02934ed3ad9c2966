"""The next-edit eval: tasks from an ``ast`` oracle, run through the engine, scored."""

from __future__ import annotations

import asyncio

from opportune.server.eval.nextedit import generate, run_tasks, summarise

CODE = """
def scale(value, factor):
    result = value * factor
    return result


def total(values):
    return sum(scale(v, 2) for v in values)


def shadow(scale):
    return scale + 1


print(scale(3, 4), total([1, 2]))
"""


def test_generated_tasks_expect_every_reference_except_shadowed_ones_and_the_engine_finds_them() -> None:
    tasks = generate("m.py", CODE, per_kind=2)
    kinds = {t.kind for t in tasks}
    assert {"rename_function", "add_parameter", "rename_parameter", "rename_local"} <= kinds
    rename = next(
        t for t in tasks if t.kind == "rename_function" and "scale" in t.text[t.first[0] : t.first[1]]
    )
    assert len(rename.expected) == 2  # the two calls; the parameter named scale in shadow() is another name
    results = asyncio.run(run_tasks(tasks))
    summary = summarise(results)
    assert summary["all"]["location_recall"] == 1.0
    assert summary["all"]["over_edit_rate"] == 0.0


def test_a_wrong_suggestion_counts_as_an_over_edit_and_lowers_precision() -> None:
    tasks = [t for t in generate("m.py", CODE, per_kind=1) if t.kind == "rename_local"]
    results = asyncio.run(run_tasks(tasks))
    results[0].predicted.append((0, 0, "oops"))
    summary = summarise(results)
    assert summary["all"]["over_edit_rate"] > 0 and summary["all"]["location_precision"] < 1.0
