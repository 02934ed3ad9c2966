"""The eval sandbox and the tests-pass metric: limits that hold, no network, a clean environment, and the
counts ``opportune eval --run-tests`` reports, on a tiny synthetic package (no model: the fake backend)."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from opportune.server.backends.fake import FakeBackend
from opportune.server.eval import sandbox
from opportune.server.eval.corpus import CorpusRoot, load_files
from opportune.server.eval.execution import ExecutionLimits, command_for_tests, pass_rate, run_task_tests
from opportune.server.eval.report import RunInfo, write_report
from opportune.server.eval.runner import ConfigResult, Configuration, evaluate, load_configuration
from opportune.server.eval.sandbox import run_sandboxed
from opportune.server.eval.tasks import Task, sample_tasks

PY = sys.executable
# A completion that is wrong wherever it goes in the synthetic module: an undefined name (or a syntax error).
WRONG = "oops_wrong_name"
TIMEOUT_S = 20.0
MEMORY_MB = 512

ARITH = '''"""Small arithmetic helpers (a synthetic module under test)."""


def add(a, b):
    return a + b


def scale(values, factor):
    result = []
    for value in values:
        result.append(value * factor)
    return result


def clamp(value, low, high):
    if value < low:
        return low
    return min(value, high)
'''

ARITH_TESTS = """from calc.arith import add, clamp, scale


def test_add():
    assert add(2, 3) == 5
    assert add(-1, 1) == 0


def test_scale():
    assert scale([1, 2, 3], 2) == [2, 4, 6]
    assert scale([], 5) == []


def test_clamp():
    assert clamp(5, 0, 3) == 3
    assert clamp(-2, 0, 3) == 0
    assert clamp(2, 0, 3) == 2
"""

UNTESTED = '''"""Nothing imports this module in the tests."""


def greeting(name):
    words = ["hello", name]
    return " ".join(words)


def shout(text):
    return text.upper() + "!"


def initials(names):
    return "".join(name[0] for name in names if name)
'''

FLAKY = '''"""Its test fails on the untouched code, so its tasks are not runnable."""


def double(x):
    return x * 2


def triple(x):
    return x * 3


def halve(x):
    return x / 2


def square(x):
    return x * x
'''

FLAKY_TESTS = """from calc.flaky import double


def test_double():
    assert double(2) == 5
"""


@pytest.fixture
def package(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    (root / "calc").mkdir(parents=True)
    (root / "tests").mkdir()
    (root / "calc" / "__init__.py").write_text("")
    (root / "calc" / "arith.py").write_text(ARITH)
    (root / "calc" / "untested.py").write_text(UNTESTED)
    (root / "calc" / "flaky.py").write_text(FLAKY)
    (root / "tests" / "test_arith.py").write_text(ARITH_TESTS)
    (root / "tests" / "test_flaky.py").write_text(FLAKY_TESTS)
    return root


def alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie waiting for a parent that may never reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def python(
    code: str, cwd: Path, timeout_s: float = TIMEOUT_S, memory_mb: int = MEMORY_MB
) -> sandbox.SandboxResult:
    return run_sandboxed([PY, "-c", code], cwd, timeout_s=timeout_s, memory_mb=memory_mb)


def run_arith_tests(package: Path) -> sandbox.SandboxResult:
    return run_sandboxed(
        command_for_tests(["tests/test_arith.py"]),
        package,
        env_extra={"PYTHONPATH": str(package), "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},
        timeout_s=TIMEOUT_S,
        memory_mb=MEMORY_MB,
    )


def test_a_correct_body_passes_and_a_wrong_one_fails(package: Path) -> None:
    assert run_arith_tests(package).passed
    (package / "calc" / "arith.py").write_text(ARITH.replace("return a + b", "return a - b"))
    wrong = run_arith_tests(package)
    assert not wrong.passed and wrong.returncode == 1 and not wrong.timed_out
    assert "test_add" in wrong.stdout_tail and "1 failed" in wrong.stdout_tail


def test_a_loop_is_killed_at_the_timeout_with_its_children(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    code = (
        "import subprocess, sys\n"
        f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(p.pid))\n"
        "while True:\n    pass\n"
    )
    started = time.perf_counter()
    result = python(code, tmp_path, timeout_s=3)
    assert result.timed_out and not result.passed
    assert result.returncode is not None and result.returncode < 0
    assert time.perf_counter() - started < 10
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(grandchild)


def test_children_left_behind_by_a_command_that_exits_are_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "orphan.pid"
    code = (
        "import subprocess, sys\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(p.pid))\n"
    )
    result = python(code, tmp_path)
    assert result.passed
    orphan = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while alive(orphan) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(orphan)


def test_allocating_4_gb_is_stopped_by_the_memory_limit(tmp_path: Path) -> None:
    code = "chunks = []\nfor _ in range(64):\n    chunks.append(bytearray(64 * 1024 * 1024))\nprint('allocated')\n"
    result = python(code, tmp_path, memory_mb=512)
    assert not result.passed and result.out_of_memory
    assert "MemoryError" in result.stderr_tail and "allocated" not in result.stdout_tail
    assert result.describe() == "out of memory"
    assert python("x = bytearray(64 * 1024 * 1024)\nprint(len(x))", tmp_path, memory_mb=512).passed


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.setblocking(False)
    yield server
    server.close()


def nothing_received(server: socket.socket) -> bool:
    try:
        conn, _ = server.accept()
    except BlockingIOError:
        return True
    conn.close()
    return False


NETWORK_ATTEMPTS = {
    "create_connection": "import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=3)",
    "raw connect": "import socket\ns = socket.socket()\ns.settimeout(3)\ns.connect(('127.0.0.1', {port}))",
    "resolve": "import socket\nprint(socket.getaddrinfo('localhost', 80))",
    "gethostbyname": "import socket\nprint(socket.gethostbyname('localhost'))",
    "udp": "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.sendto(b'x', ('127.0.0.1', {port}))",
}


@pytest.mark.parametrize("namespace", [True, False], ids=["with-unshare", "audit-hook-only"])
def test_no_network(
    namespace: bool, listener: socket.socket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if namespace and not sandbox.network_namespace_prefix():
        pytest.skip("no network namespace on this machine")
    if not namespace:
        # The audit hook must hold on its own, where namespaces are not allowed.
        monkeypatch.setattr(sandbox, "network_namespace_prefix", lambda: ())
    port = listener.getsockname()[1]
    for name, template in NETWORK_ATTEMPTS.items():
        result = python(template.format(port=port), tmp_path)
        assert not result.passed, name
        assert result.returncode == 1, (name, result.stderr_tail)
        if not namespace:
            assert sandbox.NO_NETWORK_MESSAGE in result.stderr_tail, name
    assert nothing_received(listener)
    isolation = python("pass", tmp_path).network_isolation
    assert isolation.startswith("unshare --net") if namespace else "audit hook only" in isolation
    # Local inter-process sockets stay allowed: test suites use them (asyncio, multiprocessing).
    unix = python(
        "import socket\na, b = socket.socketpair()\na.sendall(b'ok')\nassert b.recv(2) == b'ok'\n"
        "s = socket.socket(socket.AF_UNIX)\ns.bind('sock')\nprint('unix ok')",
        tmp_path,
    )
    assert unix.passed and "unix ok" in unix.stdout_tail, unix.stderr_tail


def test_a_program_that_is_not_python_has_no_network(listener: socket.socket, tmp_path: Path) -> None:
    bash = shutil.which("bash")
    if not sandbox.network_namespace_prefix() or bash is None:
        pytest.skip("needs a network namespace and bash")
    port = listener.getsockname()[1]
    result = run_sandboxed(
        [bash, "-c", f"exec 3<>/dev/tcp/127.0.0.1/{port} && echo connected"],
        tmp_path,
        timeout_s=TIMEOUT_S,
        memory_mb=MEMORY_MB,
    )
    assert not result.passed and "connected" not in result.stdout_tail
    assert nothing_received(listener)


def test_the_environment_is_scrubbed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "https_proxy", "ALL_PROXY", "no_proxy", "SECRET_TOKEN"):
        monkeypatch.setenv(name, "http://proxy.invalid:3128")
    code = "import json, os, sys\nprint(json.dumps({'env': dict(os.environ), 'bytecode': sys.dont_write_bytecode}))"
    result = run_sandboxed(
        [PY, "-c", code],
        tmp_path,
        env_extra={"HTTPS_PROXY": "http://proxy.invalid:1", "EXTRA": "kept"},
        timeout_s=TIMEOUT_S,
        memory_mb=MEMORY_MB,
    )
    assert result.passed, result.stderr_tail
    seen = json.loads(result.stdout_tail)
    env: dict[str, str] = seen["env"]
    assert not [k for k in env if "proxy" in k.lower()]
    assert "SECRET_TOKEN" not in env and env["EXTRA"] == "kept"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1" and seen["bytecode"] is True
    home, tmp = Path(env["HOME"]), Path(env["TMPDIR"])
    assert home != Path.home() and home.parent == tmp.parent and "opportune-sandbox-" in str(home)
    assert not home.exists()  # the sandbox's folder is removed afterwards


# --- the eval path: tasks from the synthetic package, two configurations on the fake backend --------------


def choose_tasks(root: Path) -> tuple[list[Task], list[Task], list[Task]]:
    """One-line tasks (their completion is not reshaped by multi-line rules), one per cursor position:
    up to four in the tested module, one each in the untested and the flaky module."""
    files = load_files([CorpusRoot("proj", root)])
    by_module: dict[str, list[Task]] = {"calc/arith.py": [], "calc/untested.py": [], "calc/flaky.py": []}
    seen: set[tuple[str, int]] = set()
    for task in sample_tasks(files, 200, seed=3, kinds=("rest_of_line", "next_line", "argument_list")):
        key = (task.file.relpath, task.cursor)
        if task.file.relpath in by_module and key not in seen:
            seen.add(key)
            by_module[task.file.relpath].append(task)
    arith, untested, flaky = by_module.values()
    assert len(arith) >= 3 and untested and flaky
    return arith[:4], untested[:1], flaky[:1]


def test_eval_tests_pass_rate_counts(package: Path, tmp_path: Path) -> None:
    arith, untested, flaky = choose_tasks(package)
    tasks = sorted([*arith, *untested, *flaky], key=lambda t: (t.file.name, t.cursor))
    # The "half" configuration is told the truth on the tested module's even-numbered tasks and
    # a wrong name elsewhere: its pass count is known before anything runs.
    good = {t.task_id for i, t in enumerate(arith) if i % 2 == 0}

    def oracle(right: set[str]) -> FakeBackend:
        def continuation(prompt: str) -> str:
            for t in tasks:
                if prompt.endswith(t.document[: t.cursor][-60:]):
                    return t.truth if t.task_id in right else WRONG
            return ""

        return FakeBackend(continuation=continuation)

    results = []
    for name, right in (("oracle", {t.task_id for t in tasks}), ("half", good)):
        config = load_configuration(f"{name}=builtin:prefix")
        result = await_evaluate(config, tasks, tmp_path / "work", oracle(right))
        for task, answer in zip(tasks, result.tasks, strict=True):
            expected = task.truth if task.task_id in right else WRONG
            assert answer.prediction.strip() == expected.strip(), (name, task.task_id, answer.prediction)
        results.append(result)

    outcomes = run_task_tests(
        tasks,
        {r.config.name: [t.prediction for t in r.tasks] for r in results},
        [CorpusRoot("proj", package)],
        ExecutionLimits(timeout_s=30, memory_mb=512),
    )
    for r in results:
        r.tests = outcomes[r.config.name]
    info = RunInfo(
        "opportune eval --run-tests", [str(package)], 0, len(tasks), 0, 0, 6.5, "fake", "test", "now"
    )
    info.tests_run = True
    report = write_report(results, info, tmp_path / "report")
    data = json.loads((tmp_path / "report" / "results.json").read_text())
    oracle_tests, half_tests = (c["tests"] for c in data["configurations"])

    runnable = len(arith)  # untested: no test imports it; flaky: its test fails on the untouched code
    assert oracle_tests["tasks"] == half_tests["tasks"] == len(tasks)
    assert oracle_tests["runnable"] == half_tests["runnable"] == runnable
    assert oracle_tests["not_runnable"] == half_tests["not_runnable"] == 2
    assert oracle_tests["passed"] == runnable and oracle_tests["pass_rate"] == 1.0
    assert half_tests["passed"] == len(good) and half_tests["failed"] == runnable - len(good)
    assert half_tests["pass_rate"] == pytest.approx(len(good) / runnable)
    assert oracle_tests["excluded"] == {
        "not runnable: no test imports the module": 1,
        "not runnable: reference fails": 1,
    }
    tests_pass = data["comparisons"][0]["tests_pass"]
    assert tests_pass["n"] == runnable
    assert tests_pass["estimate"] == pytest.approx(len(good) / runnable - 1.0)
    text = report.read_text()
    assert f"## Tests pass ({runnable} of {len(tasks)} tasks runnable, paired)" in text
    assert "| passed | " + f"{runnable} | {len(good)} |" in text
    rows = [json.loads(line) for line in (tmp_path / "report" / "tasks.jsonl").read_text().splitlines()]
    assert sum(row["half"]["tests"]["status"] == "failed" for row in rows) == runnable - len(good)
    # Every failure is the completion's own, and ran to an ordinary end (no timeout, no memory trouble).
    assert all(t.detail.startswith("exit status") for t in outcomes["half"] if t.status == "failed")


def await_evaluate(
    config: Configuration, tasks: Sequence[Task], workdir: Path, backend: FakeBackend
) -> ConfigResult:
    return asyncio.run(
        evaluate(config, tasks, [], workdir, backend_factory=lambda _s: backend, show_progress=False)
    )


def test_the_report_says_when_tests_were_not_run(package: Path, tmp_path: Path) -> None:
    arith, _, _ = choose_tasks(package)
    config = load_configuration("only=builtin:prefix")
    result = await_evaluate(config, arith, tmp_path / "work", FakeBackend())
    info = RunInfo("opportune eval", [str(package)], 0, len(arith), 0, 0, 6.5, "fake", "test", "now")
    text = write_report([result], info, tmp_path / "report").read_text()
    assert "Not run: the corpus's tests are run with each completion inserted only with `--run-tests`" in text
    data = json.loads((tmp_path / "report" / "results.json").read_text())
    assert data["configurations"][0]["tests"] is None
    assert pass_rate([]).rate is None
