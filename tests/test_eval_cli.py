"""`opportune eval` end to end: two configurations on a tiny corpus copied from Python's standard library
(real code nobody here wrote), the report, the plots and the paired comparison.  The e2e test runs --quick
with the real embedded model, as CI does."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
STDLIB = Path(sysconfig.get_paths()["stdlib"])
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    root.mkdir()
    for name in ("colorsys.py", "textwrap.py"):
        shutil.copy(STDLIB / name, root / name)
    return root


def run_eval(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "opportune.server.cli", "eval", "--no-progress", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def check_report(out: Path, names: list[str], tasks: int, spans: int) -> dict[str, Any]:
    report = (out / "report.md").read_text()
    for name in names:
        assert f"| {name} |" in report or f"| {name} " in report
    assert "**CPO** (chars per opportunity)" in report and "edit similarity" in report
    assert f"{names[1]} − {names[0]} [95% CI]" in report
    for plot in ("quality_by_kind.png", "cpo_funnel.png", "latency.png", "differences.png"):
        assert (out / plot).read_bytes()[:8] == PNG
    # A verdict line per compared configuration, on CPO and exact match.
    verdict = next(
        line for line in report.splitlines() if line.startswith(f"- **{names[1]}** vs {names[0]}:")
    )
    assert "CPO: " in verdict and "exact match: " in verdict
    assert any(call in verdict for call in ("better (", "worse (", "cannot tell yet ("))
    results = json.loads((out / "results.json").read_text())
    assert [c["name"] for c in results["configurations"]] == names
    comparison = results["comparisons"][0]
    assert [v["metric"] for v in comparison["verdicts"]] == ["CPO", "exact match"]
    assert all(v["call"] in ("better", "worse", "cannot tell yet") for v in comparison["verdicts"])
    assert comparison["quality"]["edit_similarity"]["n"] == tasks
    assert comparison["typing"]["cpo"]["n"] == spans
    lines = (out / "tasks.jsonl").read_text().splitlines()
    assert len(lines) == tasks and all(set(names) <= set(json.loads(line)) for line in lines)
    for config in results["configurations"]:
        funnel = config["typing"]["funnel"]
        assert funnel["opportunities"] > 0 and funnel["attempts"] > 0
        assert Path(config["store"]).is_file()
    return results


def test_eval_runs_end_to_end_on_the_fake_backend(corpus: Path, tmp_path: Path) -> None:
    a = tmp_path / "prefix-only.toml"
    a.write_text('[completion]\nprompt_strategy = "prefix"\n')
    out = tmp_path / "report"
    done = run_eval(
        "--config", str(a), "--config", "small=builtin:ctx256", "--corpus", str(corpus),
        "--tasks", "10", "--typing-chars", "60", "--spans", "2", "--backend", "fake",
        "--time-scale", "0.1", "--out", str(out), "--seed", "5",
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    results = check_report(out, ["prefix-only", "small"], tasks=10, spans=2)
    assert results["configurations"][0]["settings"] == {"completion.prompt_strategy": "prefix"}
    assert results["configurations"][1]["model_id"] == "fake"
    assert "# Opportune offline evaluation" in done.stdout


def test_eval_refuses_the_projects_own_code_and_bad_configurations(tmp_path: Path) -> None:
    done = run_eval(
        "--config", "builtin:prefix", "--corpus", str(ROOT / "server"), "--backend", "fake", timeout=60
    )
    assert done.returncode == 2 and "own checkout" in done.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[completion]\ncontext_tokenz = 3\n")
    done = run_eval("--config", str(bad), "--backend", "fake", timeout=60)
    assert done.returncode == 2 and "context_tokenz: unknown setting" in done.stderr
    done = run_eval(
        "--config", "builtin:prefix", "--config", "builtin:prefix", "--backend", "fake", timeout=60
    )
    assert done.returncode == 2 and "names must differ" in done.stderr


@pytest.mark.e2e
def test_eval_quick_with_the_real_model(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "quick"
    done = run_eval(
        "--quick", "--config", "prefix=builtin:prefix", "--config", "syntax=builtin:syntax",
        "--corpus", str(corpus), "--out", str(out),
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    results = check_report(out, ["prefix", "syntax"], tasks=12, spans=3)
    for config in results["configurations"]:
        assert config["model_id"] and config["model_id"] != "fake"
        # The real model answers most tasks when given the time.
        assert config["quality"]["empty"] < 0.5
        assert config["seconds"] < 240
