"""The dashboard over real stores: the page's views, filters, refused parameters, read-only HTTP, problem
pages for empty, one-arm, corrupt and missing stores, the export, and the command line the editor runs.

Test data comes from ``opportune.telemetry.simulate`` (installs with a known CPO per arm) written through the real
``EventStore``; expected numbers are computed from the same events with the telemetry library.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from opportune.telemetry.cpo import funnel_counts
from opportune.telemetry.dashboard import app as dashboard_app
from opportune.telemetry.dashboard.data import Choices, Query, QueryError, parse_query
from opportune.telemetry.dashboard.web import DashboardServer
from opportune.telemetry.experiments import PeekingPlan, analyse
from opportune.telemetry.frames import EventFrames
from opportune.telemetry.numbers import fmt_metric
from opportune.telemetry.simulate import ArmTruth, simulate_units, units_to_frames
from opportune.telemetry.store import EventStore, open_events

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = "context-v2"
ARMS = {
    "control": ArmTruth(latency_ms=180.0),
    "fast-context": ArmTruth(acceptance_rate=0.34, latency_ms=140.0),
}
# (language, installs per arm, model): two models so that the model filter has something to split.
POPULATIONS = (
    ("python", 16, "gemma-3-270m"),
    ("typescript", 8, "gemma-3-270m"),
    ("go", 6, "qwen-coder-0.5b"),
)
START_TS = 1_700_000_000.0  # 2023-11-14 22:13 UTC
SPAN_S = 5 * 86400.0


def simulated_frames(arms: dict[str, ArmTruth] = ARMS, seed: int = 0, activity: float = 40) -> EventFrames:
    """Installs of every population in ``arms``, ``activity`` opportunities each on average, over five days."""
    rng = np.random.default_rng(seed)
    parts = []
    for language, installs, model in POPULATIONS:
        units = simulate_units(arms, installs, rng, opportunities_mean=activity)
        units["install_id"] = units["install_id"] + f"-{language}"
        parts.append(
            units_to_frames(
                units,
                rng,
                experiment=EXPERIMENT,
                arms=arms,
                language=language,
                model_id=model,
                start_ts=START_TS,
                span_s=SPAN_S,
            )
        )
    return EventFrames.merge(parts)


def write_store(path: Path, frames: EventFrames) -> Path:
    """Write events through the real store (the server's write path)."""
    with EventStore(path, flush_interval_s=3600) as store:
        for event in frames.to_events():
            store.record(event)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(
    url: str, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, str, dict[str, str]]:
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode("utf-8"), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8"), dict(exc.headers)


def count(pattern: str, body: str) -> int:
    return len(re.findall(pattern, body))


def chart(body: str, chart_id: str) -> str:
    """The markup of one chart (an <svg id=...> element)."""
    match = re.search(rf'<svg[^>]*id="{re.escape(chart_id)}".*?</svg>', body, re.S)
    assert match, f"no chart {chart_id}"
    return match.group(0)


@pytest.fixture(scope="module")
def frames() -> EventFrames:
    return simulated_frames()


@pytest.fixture(scope="module")
def store(frames: EventFrames, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_store(tmp_path_factory.mktemp("dash") / "two-arms.db", frames)


@pytest.fixture(scope="module")
def server(store: Path) -> Iterator[DashboardServer]:
    with DashboardServer([store], port=0).start() as running:
        yield running


# --- the page ------------------------------------------------------------------------------------------


def test_page_shows_every_view_computed_from_the_store(server: DashboardServer, store: Path) -> None:
    status, body, headers = get(server.url)
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    assert "script-src" not in headers["Content-Security-Policy"]  # default-src 'none': no script at all
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    for chart_id in (
        "chart-cpo-daily",
        "chart-funnel",
        "chart-lift-0",
        "chart-latency",
        "chart-losses",
        "chart-languages",
        *(f"factor-{m}" for m in ("attempt_rate", "feedback_rate", "acceptance_rate", "cpo")),
        "factor-tokens_per_accept",
        "factor-chars_per_token",
    ):
        assert f'id="{chart_id}"' in body, chart_id
    assert 'id="latency-budget"' in body and "budget 300 ms" in body
    assert "<script" not in body and "http://" not in body.split("<footer", 1)[0].replace(server.url, "")

    # The verdict, SRM and each arm's CPO are those of the library's analysis of the same store.
    analysis = analyse(open_events([store]), EXPERIMENT, peeking=PeekingPlan())
    verdict = chart_free(body, "verdict")
    treatment = analysis.arm("fast-context")
    assert f">{treatment.verdict}</span>" in verdict
    assert ("Sample ratio OK" in verdict) == (not analysis.srm.alarm)
    assert f"Intervals: {analysis.describe_intervals()}" in verdict  # says which kind it shows
    for arm in analysis.arms:
        assert fmt_metric("cpo", arm.metrics["cpo"].value, unit=False) in body
        assert f'data-arm="{arm.arm}"' in body
    # Tooltips: every point, bar and estimate carries an SVG <title>.
    assert count(r"<title>", body) > 50


def chart_free(body: str, section_id: str) -> str:
    match = re.search(rf'<section[^>]*id="{section_id}".*?</section>', body, re.S)
    assert match, section_id
    return match.group(0)


def test_daily_chart_has_a_point_per_arm_and_day(server: DashboardServer, frames: EventFrames) -> None:
    _, body, _ = get(server.url)
    daily = chart(body, "chart-cpo-daily")
    cells = funnel_counts(frames, by=["arm", "day"])
    assert count(r'class="point"', daily) == len(cells[cells["opportunities"] > 0])
    assert count(r'class="band"', daily) == 2  # one interval band per arm (no gaps in the data)
    first_day = datetime.fromtimestamp(START_TS, UTC).strftime("%Y-%m-%d")
    assert f"<title>{first_day} · control: CPO" in daily


def test_funnel_and_languages_match_the_counts(server: DashboardServer, frames: EventFrames) -> None:
    _, body, _ = get(server.url)
    counts = funnel_counts(frames, by=["arm"]).set_index("arm")
    funnel = chart(body, "chart-funnel")
    for arm, row in counts.iterrows():
        assert (
            f"{arm} · Shown: {row['shown']:,} ({row['shown'] / row['opportunities']:.1%} of opportunities)"
            in funnel
        )
    languages = chart(body, "chart-languages")
    order = [m.group(1) for m in re.finditer(r'font-weight="600"[^>]*>([a-z]+)</text>', languages)]
    by_language = funnel_counts(frames, by=["language"]).sort_values("opportunities", ascending=False)
    assert order == list(by_language["language"])  # most used first


def test_filters_change_the_numbers(server: DashboardServer, frames: EventFrames) -> None:
    status, body, _ = get(server.url + "?language=go")
    assert status == 200
    languages = chart(body, "chart-languages")
    assert ">go</text>" in languages and ">python</text>" not in languages
    go = funnel_counts(frames, by=["language", "arm"])
    go = go[go["language"] == "go"].set_index("arm")
    kpis = re.findall(
        r'<section class="card kpi[^"]*" data-arm="([^"]+)">.*?<dt>opportunities</dt><dd>([\d,]+)</dd>',
        body,
        re.S,
    )
    assert {arm: int(n.replace(",", "")) for arm, n in kpis} == go["opportunities"].to_dict()

    _, by_model, _ = get(server.url + "?model=qwen-coder-0.5b")
    assert chart(by_model, "chart-languages") == chart(body, "chart-languages")  # only go used that model

    first = datetime.fromtimestamp(START_TS + 86400, UTC).strftime("%Y-%m-%d")
    _, one_day, _ = get(server.url + f"?from={first}&to={first}")
    daily = chart(one_day, "chart-cpo-daily")
    assert count(r'class="point"', daily) == 2  # one per arm
    assert f"<title>{first} · " in daily

    _, budget, _ = get(server.url + "?budget=120")
    assert "budget 120 ms" in budget and "slower than 120 ms" in budget


@pytest.mark.parametrize("evil", ["' OR 1=1 --", "<script>alert(1)</script>", "python' --", "python\x00"])
@pytest.mark.parametrize("name", ["language", "model", "experiment", "from", "budget"])
def test_malicious_parameters_are_refused_and_escaped(
    server: DashboardServer, store: Path, name: str, evil: str
) -> None:
    digest = hashlib.sha256(store.read_bytes()).hexdigest()
    _, before, _ = get(server.url)
    status, body, _ = get(server.url + "?" + urllib.parse.urlencode({name: evil}))
    assert status == 400
    assert "Filter refused" in body
    assert "<script>alert" not in body  # shown escaped, never as markup
    if "<script>" in evil:
        assert "&lt;script&gt;" in body
    _, after, _ = get(server.url)
    strip = re.compile(r"exported [^<]*|<footer.*", re.S)
    assert strip.sub("", before) == strip.sub("", after)  # results unchanged
    assert hashlib.sha256(store.read_bytes()).hexdigest() == digest  # and the store untouched


def test_unknown_and_repeated_parameters_are_refused(server: DashboardServer) -> None:
    status, body, _ = get(server.url + "?q=%3Cscript%3E")
    assert status == 400 and "unknown parameter" in body and "<script>" not in body
    status, body, _ = get(server.url + "?language=go&language=python")
    assert status == 400 and "given 2 times" in body
    status, body, _ = get(server.url + "?from=2023-11-20&to=2023-11-15")
    assert status == 400 and "is after" in body


def test_parse_query_whitelists_values() -> None:
    choices = Choices(languages=("go", "python"), models=("m",), experiments=("e",))
    assert parse_query({"language": ["go"], "budget": ["250"]}, choices) == Query(
        language="go", budget_ms=250.0
    )
    assert parse_query({"language": [""]}, choices, Query(language="go")).language is None  # "" = all
    assert parse_query({}, choices, Query(language="go")).language == "go"  # absent keeps the base
    for params in (
        {"language": ["rust"]},
        {"model": ["m' OR '1'='1"]},
        {"budget": ["0"]},
        {"budget": ["1e3"]},
        {"budget": ["99999999"]},
        {"from": ["2023-02-30"]},
        {"to": ["yesterday"]},
        {"experiment": ["E"]},
    ):
        with pytest.raises(QueryError):
            parse_query(params, choices)


def test_read_only_http(server: DashboardServer) -> None:
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        status, _, headers = get(server.url, method=method)
        assert status == 405, method
        assert headers["Allow"] == "GET, HEAD"
    status, body, headers = get(server.url, method="HEAD")
    assert status == 200 and body == "" and int(headers["Content-Length"]) > 10_000
    assert get(server.url + "healthz")[:2] == (200, "ok\n")
    status, body, _ = get(server.url + "nowhere")
    assert status == 404 and "the dashboard is at /" in body


def test_requests_for_another_host_are_refused(server: DashboardServer) -> None:
    """DNS rebinding: a page on evil.example resolving to 127.0.0.1 must not read the dashboard."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    connection.request("GET", "/", headers={"Host": f"evil.example:{server.port}"})
    assert connection.getresponse().status == 421
    connection.close()
    assert get(server.url, headers={"Host": f"localhost:{server.port}"})[0] == 200


def test_report_download_is_the_page_without_the_form(server: DashboardServer) -> None:
    status, body, headers = get(server.url + "report.html?language=python")
    assert status == 200
    assert "attachment" in headers["Content-Disposition"]
    assert "<form" not in body and 'id="chart-latency"' in body and "filters: language python" in body


def test_same_store_twice_is_not_counted_twice(store: Path, server: DashboardServer) -> None:
    _, once, _ = get(server.url)
    with DashboardServer([store, store], port=0).start() as twice:
        _, body, _ = get(twice.url)
    numbers = re.compile(r'<section[^>]*id="numbers".*?</section>', re.S)
    assert numbers.search(once).group(0) == numbers.search(body).group(0)  # type: ignore[union-attr]


def test_page_follows_new_events(tmp_path: Path) -> None:
    db = write_store(
        tmp_path / "live.db", simulated_frames({"control": ARMS["control"]}, seed=3, activity=12)
    )
    with DashboardServer([db], port=0).start() as running:
        _, first, _ = get(running.url)
        write_store(db, simulated_frames(ARMS, seed=4, activity=12))  # a second arm arrives
        _, second, _ = get(running.url)
    assert 'data-arm="fast-context"' not in first and "Only one arm (control)" in first
    assert 'data-arm="fast-context"' in second and "Only one arm" not in second


# --- problem stores ------------------------------------------------------------------------------------


def test_empty_store_says_so(tmp_path: Path) -> None:
    db = tmp_path / "empty.db"
    EventStore(db, flush_interval_s=3600).close()  # created, migrated, no events
    with DashboardServer([db], port=0).start() as running:
        status, body, _ = get(running.url)
    assert status == 200
    assert "This store has no events yet" in body
    assert "Traceback" not in body and "<svg" not in body


def test_one_arm_store_shows_its_charts_and_says_there_is_nothing_to_compare(tmp_path: Path) -> None:
    db = write_store(tmp_path / "one.db", simulated_frames({"control": ARMS["control"]}, seed=1, activity=12))
    with DashboardServer([db], port=0).start() as running:
        status, body, _ = get(running.url)
    assert status == 200
    assert "Only one arm (control) has events: nothing to compare it with yet" in body
    assert 'id="chart-funnel"' in body and 'id="chart-cpo-daily"' in body
    assert 'id="chart-lift-0"' not in body  # no treatment, no lift
    assert "Traceback" not in body


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("corrupt.db", b"\x00garbage" * 512, "is not a readable telemetry store"),
        ("missing.db", None, "no telemetry store at"),
    ],
)
def test_unreadable_store_is_a_clear_page(
    tmp_path: Path, name: str, content: bytes | None, message: str
) -> None:
    db = tmp_path / name
    if content is not None:
        db.write_bytes(content)
    with DashboardServer([db], port=0).start() as running:
        status, body, _ = get(running.url)
        assert get(running.url + "?language=x")[0] == 503  # the store is the problem, not the filter
    assert status == 503
    assert "Cannot read the telemetry" in body and message in body
    assert "Traceback" not in body and 'File "' not in body


# --- export --------------------------------------------------------------------------------------------


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    dashboard_app.add_arguments(parser)
    return dashboard_app.run(parser.parse_args(list(argv)))


def test_export_is_one_self_contained_file(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "out" / "report.html"
    assert (
        run_cli("--db", str(store), "--export", str(target), "--language", "python", "--budget-ms", "250")
        == 0
    )
    html = target.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>")
    assert count(r'<svg[^>]*class="chart"', html) >= 11
    # Nothing to fetch: no script, no external stylesheet, image or font; styles inline; url() only
    # for references inside the document (clip paths).
    assert not re.search(r"<script|<link[^>]*stylesheet|src=|url\((?!#)|@import|https?://", html)
    assert "url(#" in html
    assert "<style>" in html and "<form" not in html
    assert "filters: language python" in html and "budget 250 ms" in html
    assert capsys.readouterr().out.strip() == f"wrote {target}"


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing", "no telemetry store at"),
        ("corrupt", "is not a readable telemetry store"),
        ("empty", "nothing to export: no events in"),
        ("filter", "language 'cobol' is not in these stores"),
    ],
)
def test_export_errors_are_one_line(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], setup: str, message: str
) -> None:
    db = tmp_path / f"{setup}.db"
    extra: list[str] = []
    if setup == "corrupt":
        db.write_bytes(b"not sqlite at all" * 100)
    elif setup == "empty":
        EventStore(db, flush_interval_s=3600).close()
    elif setup == "filter":
        db, extra = store, ["--language", "cobol"]
    target = tmp_path / "report.html"
    assert run_cli("--db", str(db), "--export", str(target), *extra) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err and "Traceback" not in err
    assert not target.exists()


def test_export_of_one_arm_works_and_notes_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = write_store(tmp_path / "one.db", simulated_frames({"control": ARMS["control"]}, seed=2, activity=12))
    assert run_cli("--db", str(db), "--export", str(tmp_path / "r.html")) == 0
    assert "note: Only one arm (control)" in capsys.readouterr().err


# --- the command line, as the VS Code extension runs it ------------------------------------------------


def start_cli(*argv: str, stderr_path: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with stderr_path.open("w") as stderr:  # a file, not a pipe: a full pipe would block the server
        return subprocess.Popen(
            [sys.executable, "-m", "opportune.server.cli", "dashboard", *argv],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            text=True,
        )


def wait_until_answers(url: str, process: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the dashboard exited"
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer")


def test_cli_serves_on_the_port_the_extension_gives(store: Path, tmp_path: Path) -> None:
    port = free_port()
    process = start_cli("--port", str(port), "--db", str(store), stderr_path=tmp_path / "stderr.txt")
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_until_answers(url, process)
        status, body, _ = get(url)
        assert status == 200 and 'id="chart-cpo-daily"' in body
        assert process.stdout is not None
        assert process.stdout.readline().startswith(f"Opportune dashboard on {url}")
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_cli_warns_loudly_off_loopback(store: Path, tmp_path: Path) -> None:
    stderr = tmp_path / "stderr.txt"
    process = start_cli("--port", "0", "--host", "0.0.0.0", "--db", str(store), stderr_path=stderr)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("Opportune dashboard on http://0.0.0.0:")
        port = int(line.split(":")[2].split("/")[0])
        # Off loopback the Host check is off: the address people were given must work.
        assert get(f"http://127.0.0.1:{port}/healthz")[0] == 200
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert "WARNING: THE DASHBOARD IS LISTENING ON 0.0.0.0, NOT ON LOOPBACK" in stderr.read_text()


def test_cli_reports_a_busy_port_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert run_cli("--db", str(tmp_path / "x.db"), "--port", str(port)) == 2
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}" in err and len(err.strip().splitlines()) == 1


# --- shapes of data the page must cope with ------------------------------------------------------------


def test_three_arms_get_a_colour_and_a_lift_chart_each() -> None:
    from opportune.telemetry.dashboard.data import build_view
    from opportune.telemetry.dashboard.page import render_page

    arms = {**ARMS, "multiline": ArmTruth(tokens_per_accept=9.0, latency_ms=260.0)}
    view = build_view(simulated_frames(arms, seed=5, activity=20), Query())
    assert [a.name for a in view.arms] == ["control", "fast-context", "multiline"]
    assert len({a.colour for a in view.arms}) == 3
    assert view.analysis is not None and view.analysis.correction == "holm"
    body = render_page(view)
    assert 'id="chart-lift-0"' in body and 'id="chart-lift-1"' in body
    assert "(Holm-corrected)" in body
    for arm in view.arms:  # the same colour for an arm in every chart
        # A bar is a group carrying the arm, its tooltip and the drawn shape.
        bar = rf'<g class="bar" data-arm="{re.escape(arm.name)}">\s*<title>[^<]*</title>\s*<path[^>]*>'
        tags = re.findall(bar, body)
        assert len(tags) >= 4, arm.name  # funnel bars, language bars...
        assert {re.search(r"fill: (#[0-9a-f]{6})", t).group(1) for t in tags} == {arm.colour}  # type: ignore[union-attr]


def test_events_without_an_experiment_show_every_arm_without_a_verdict() -> None:
    from opportune.telemetry.dashboard.data import build_view
    from opportune.telemetry.dashboard.page import render_page

    rng = np.random.default_rng(6)
    units = simulate_units({"": ArmTruth()}, 12, rng, opportunities_mean=30)
    frames = units_to_frames(units, rng, experiment="", arms={"": ArmTruth()})
    view = build_view(frames, Query())
    assert view.analysis is None and [a.label for a in view.arms] == ["(no arm)"]
    body = render_page(view)
    assert "These events belong to no experiment" in body
    assert 'id="verdict"' not in body and 'id="chart-funnel"' in body and 'id="factor-cpo"' in body
    cpo = funnel_counts(frames).iloc[0]
    assert fmt_metric("cpo", cpo["accepted_chars"] / cpo["opportunities"], unit=False) in body


def test_filters_that_match_nothing_say_so(server: DashboardServer) -> None:
    status, body, _ = get(server.url + "?from=2023-11-16&to=2023-11-16&model=qwen-coder-0.5b&language=python")
    assert status == 200
    assert "No opportunities match these filters" in body and "<svg" not in body
