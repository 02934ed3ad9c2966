"""Task sampling: real code from Python's standard library, deterministic for a seed, and the held-out text
never reaches the model's prompt (asserted on the prompts the engine builds, through a recording backend)."""

from __future__ import annotations

import shutil
import sysconfig
from collections.abc import Callable
from pathlib import Path

import pytest

from opportune.server.backends.base import Generation, GenerationRequest
from opportune.server.backends.fake import FakeBackend
from opportune.server.config import Settings
from opportune.server.eval.corpus import CorpusError, CorpusRoot, folder_roots, load_files
from opportune.server.eval.runner import EventRouter, run_quality
from opportune.server.eval.tasks import KINDS, sample_spans, sample_tasks
from opportune.server.session import start_session
from opportune.server.templates import FimTemplate

STDLIB = Path(sysconfig.get_paths()["stdlib"])
# Real code nobody here wrote, present wherever Python is.
CORPUS_MODULES = ("textwrap.py", "colorsys.py", "shlex.py")
JS = """\
'use strict';

function clamp(value, low, high) {
  if (value < low) {
    return low;
  }
  return Math.min(value, high);
}

function describe(items, separator) {
  const names = items.map((item) => item.name.trim());
  return names.join(separator || ', ');
}

module.exports = { clamp: clamp, describe: describe };
"""


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "stdlib-sample"
    root.mkdir()
    for name in CORPUS_MODULES:
        shutil.copy(STDLIB / name, root / name)
    (root / "util.js").write_text(JS)
    return root


def test_sampling_is_deterministic_for_a_seed(corpus: Path) -> None:
    files = load_files(folder_roots([corpus]))
    assert {f.relpath for f in files} == {*CORPUS_MODULES, "util.js"}
    first = sample_tasks(files, 25, seed=7)
    again = sample_tasks(load_files(folder_roots([corpus])), 25, seed=7)
    other = sample_tasks(files, 25, seed=8)
    assert [t.task_id for t in first] == [t.task_id for t in again]
    assert [t.task_id for t in first] != [t.task_id for t in other]
    assert len(first) == 25 and len({t.task_id for t in first}) == 25
    # Kinds take turns: each gets its share of 25.
    assert {k: sum(t.kind == k for t in first) for k in KINDS} == {k: 5 for k in KINDS}
    spans = sample_spans(files, 200, 3, seed=7)
    assert [s.span_id for s in spans] == [s.span_id for s in sample_spans(files, 200, 3, seed=7)]
    assert len(spans) == 3 and all(len(s.text) >= 8 and "\n" not in s.text[-1:] for s in spans)


def test_tasks_hold_out_exactly_the_truth(corpus: Path) -> None:
    files = load_files(folder_roots([corpus]))
    for task in sample_tasks(files, 40, seed=1):
        text = task.file.text
        assert task.truth == text[task.cursor : task.end] and task.truth.strip()
        assert task.document == text[: task.cursor] + text[task.end :]
        line = text[text.rfind("\n", 0, task.cursor) + 1 : task.cursor]
        if task.kind in ("next_line", "block_body"):
            assert not line.strip(), "the cursor stands after the indentation"
        if task.kind == "rest_of_line":
            assert "\n" not in task.truth and text[task.end : task.end + 1] in ("\n", "")
        if task.kind == "argument_list":
            assert text[task.cursor - 1] == "(" and text[task.end] == ")"
        if task.kind == "block_body":
            assert task.truth.count("\n") < 8


class RecordingBackend(FakeBackend):
    """The fake model, keeping every prompt it was asked to continue."""

    def __init__(self, fim: FimTemplate | None = None) -> None:
        super().__init__(continuation=lambda _p: "x = 1\n")
        self.fim = fim
        self.prompts: list[str] = []

    def generate(self, request: GenerationRequest) -> Generation:
        self.prompts.append(self.render(request.prompt))
        return super().generate(request)


FIM = FimTemplate("test", "<PRE>", "<SUF>", "<MID>")


@pytest.mark.parametrize(
    ("strategy", "fim"),
    [("prefix", None), ("syntax", None), ("syntax", FIM)],
    ids=["prefix", "syntax", "fim"],
)
async def test_the_held_out_text_never_reaches_the_prompt(
    corpus: Path, tmp_path: Path, strategy: str, fim: FimTemplate | None
) -> None:
    files = load_files(folder_roots([corpus]))
    tasks = sample_tasks(files, 30, seed=3)
    backends: list[RecordingBackend] = []

    def factory(_settings: Settings) -> RecordingBackend:
        backends.append(RecordingBackend(fim))
        return backends[-1]

    options = {
        "completion": {
            "promptStrategy": strategy,
            "prewarm": False,
            "deadlineMs": 5000,
            "contextTokens": 400,
        },
        "telemetry": {"installId": "test"},
    }
    session = start_session(
        options, store=EventRouter(), backend_factory=factory, config_path=_empty(tmp_path)
    )
    try:
        results = await run_quality(session.engine, tasks)
    finally:
        session.close()
    prompts = backends[0].prompts
    assert len(results) == len(tasks) == len(prompts), "one model call per task"
    checked = 0
    for task, prompt in zip(tasks, prompts, strict=True):
        before = task.file.text[: task.cursor]
        shown_before = prompt
        if fim is not None:
            assert prompt.startswith("<PRE>") and prompt.endswith("<MID>")
            shown_before, suffix = prompt.removeprefix("<PRE>").split("<SUF>", 1)
            # The suffix a FIM model sees is what follows the held-out text (8 lines by default).
            assert suffix == "".join(task.file.text[task.end :].splitlines(keepends=True)[:8]) + "<MID>"
        # The cursor is at the end of what the model sees: at least the cursor line up to the cursor.
        line_prefix = before[before.rfind("\n") + 1 :]
        assert shown_before.endswith(line_prefix)
        if "\n" in before:
            assert before.endswith(shown_before[-len(line_prefix) - 1 :])
        truth = task.truth.strip()
        if len(truth) >= 4 and truth not in task.document:
            checked += 1
            assert truth not in prompt, f"{task.task_id} leaked its held-out text"
    assert checked >= 10, "too few tasks with a distinctive truth: the leak check would prove nothing"


def _empty(tmp_path: Path) -> Path:
    path = tmp_path / "empty.toml"
    path.write_text("")
    return path


def test_the_projects_own_code_is_refused(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    assert (root / "server" / "completion" / "engine.py").is_file()
    with pytest.raises(CorpusError, match="own checkout"):
        folder_roots([root / "server"])
    with pytest.raises(CorpusError, match="own checkout"):
        folder_roots([root])
    # A folder holding a copy of the checkout somewhere inside is refused while walking it.
    outer = tmp_path / "outer"
    (outer / "copy" / "server" / "completion").mkdir(parents=True)
    (outer / "copy" / "telemetry").mkdir(parents=True)
    (outer / "copy" / "server" / "completion" / "engine.py").write_text("class Engine: ...\n")
    (outer / "copy" / "telemetry" / "cpo.py").write_text("")
    with pytest.raises(CorpusError, match="own checkout"):
        load_files([CorpusRoot("outer", outer)])


def test_fetching_uses_the_registry_clients_once(tmp_path: Path) -> None:
    from opportune.server.eval.corpus import Package, fetch_package

    calls: list[list[str]] = []

    def fake_pip(cmd: list[str], cwd: Path | None = None) -> object:
        calls.append(cmd)
        target = Path(cmd[cmd.index("--target") + 1])
        (target / "pkg").mkdir(parents=True)
        (target / "pkg" / "__init__.py").write_text("def f():\n    return 1\n" * 20)

        class Done:
            returncode = 0
            stdout = stderr = ""

        return Done()

    runner: Callable[..., object] = fake_pip
    package = Package("pypi", "pkg", "1.0")
    first = fetch_package(package, tmp_path, runner)  # type: ignore[arg-type]
    again = fetch_package(package, tmp_path, runner)  # type: ignore[arg-type]
    assert first == again and (first / "pkg" / "__init__.py").is_file()
    assert len(calls) == 1 and "pkg==1.0" in calls[0] and "--no-deps" in calls[0]
