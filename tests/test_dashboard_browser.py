"""The dashboard in a real browser: headless Chromium, driven over the Chrome DevTools Protocol, loads the
page that ``opportune dashboard --port N --db PATH`` serves (as the VS Code extension starts it) over a
store with two simulated arms; the charts must be laid out, nothing may fail in the console, and a
full-page screenshot is written to ``artifacts/dashboard.png`` for people to look at.

Needs Debian's ``chromium`` (scripts/test.sh installs it) and the ``websockets`` package.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import pytest
from test_dashboard import ROOT, free_port, simulated_frames, start_cli, wait_until_answers, write_store

from opportune.telemetry.experiments import Verdict

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
websockets_sync = pytest.importorskip(
    "websockets.sync.client", reason="the websockets package is not installed"
)
if CHROMIUM is None:
    pytest.skip("chromium is not installed (apt-get install chromium)", allow_module_level=True)

ARTIFACTS = ROOT / "artifacts"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--hide-scrollbars",
    "--mute-audio",
)


class DevTools:
    """A minimal CDP session on one page target: commands in, events collected."""

    def __init__(self, ws: Any) -> None:
        self._ws = ws
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, timeout: float = 60, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        ident = self._next_id
        self._ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self._ws.recv(timeout=max(deadline - time.monotonic(), 0.01)))
            if message.get("id") == ident:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))
            if "method" in message:
                self.events.append(message)

    def wait_for(self, method: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events:
                if event["method"] == method:
                    self.events.remove(event)
                    return event
            message = json.loads(self._ws.recv(timeout=max(deadline - time.monotonic(), 0.01)))
            if "method" in message:
                self.events.append(message)

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A headless Chromium with a fresh profile; yields its DevTools port."""
    profile = tmp_path_factory.mktemp("chromium-profile")
    log = (profile.parent / "chromium-stderr.txt").open("w")  # a file: an unread pipe would fill and block
    assert CHROMIUM is not None
    process = subprocess.Popen(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=log,
        stdin=subprocess.DEVNULL,
    )
    try:
        # Chromium writes the port it picked into the profile once DevTools listens.
        active = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (active.exists() and active.read_text().strip()):
            assert process.poll() is None, "chromium exited at start-up"
            assert time.monotonic() < deadline, "chromium's DevTools did not start"
            time.sleep(0.1)
        yield int(active.read_text().splitlines()[0])
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.fixture
def page(chromium: int) -> Iterator[DevTools]:
    request = urllib.request.Request(f"http://127.0.0.1:{chromium}/json/new?about:blank", method="PUT")
    with urllib.request.urlopen(request, timeout=30) as response:
        target = json.load(response)
    try:
        # Screenshots of a long page are several MB of base64.
        with websockets_sync.connect(
            target["webSocketDebuggerUrl"], max_size=64 * 1024 * 1024, open_timeout=30
        ) as ws:
            session = DevTools(ws)
            for domain in ("Runtime", "Log", "Page"):
                session.send(f"{domain}.enable")
            session.send(
                "Emulation.setDeviceMetricsOverride",
                width=1280,
                height=900,
                deviceScaleFactor=1,
                mobile=False,
            )
            yield session
    finally:
        urllib.request.urlopen(f"http://127.0.0.1:{chromium}/json/close/{target['id']}", timeout=30).close()


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``opportune dashboard --port N --db PATH`` over two simulated arms, exactly as the extension runs it."""
    folder = tmp_path_factory.mktemp("dashboard-browser")
    store = write_store(folder / "two-arms.db", simulated_frames())
    port = free_port()
    process = start_cli("--port", str(port), "--db", str(store), stderr_path=folder / "stderr.txt")
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_answers(url, process)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def load(page: DevTools, url: str) -> None:
    page.send("Page.navigate", url=url)
    page.wait_for("Page.loadEventFired")


def problems(page: DevTools) -> list[str]:
    """Console errors, uncaught exceptions and browser log errors (blocked loads, CSP violations...)."""
    found = []
    for event in page.events:
        method, params = event["method"], event.get("params", {})
        if method == "Runtime.exceptionThrown":
            found.append(f"exception: {params['exceptionDetails'].get('text')}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert", "warning"):
            found.append(f"console.{params['type']}: {[a.get('value') for a in params.get('args', [])]}")
        elif method == "Log.entryAdded" and params["entry"]["level"] in ("error", "warning"):
            found.append(f"log: {params['entry'].get('text')} ({params['entry'].get('url', '')})")
    return found


def screenshot(page: DevTools, name: str) -> Path:
    size = page.send("Page.getLayoutMetrics")["cssContentSize"]
    shot = page.send(
        "Page.captureScreenshot",
        format="png",
        captureBeyondViewport=True,
        clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
    )
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


LAYOUT = """(() => {
  const charts = [...document.querySelectorAll('svg.chart')];
  const box = (el) => { const r = el.getBoundingClientRect(); return [Math.round(r.width), Math.round(r.height)]; };
  return {
    title: document.title,
    charts: charts.map((el) => ({id: el.id, size: box(el), marks: el.querySelectorAll('rect, circle, path, polygon, line').length})),
    tooltips: document.querySelectorAll('svg title').length,
    kpis: [...document.querySelectorAll('section.kpi')].map((el) => el.dataset.arm),
    verdict: document.querySelector('#verdict .pill')?.textContent ?? null,
    srm: document.querySelector('#srm')?.textContent ?? null,
    horizontalOverflow: document.documentElement.scrollWidth - document.documentElement.clientWidth,
    scripts: document.scripts.length,
    resources: performance.getEntriesByType('resource').map((r) => r.name),
    form: [...document.querySelectorAll('form.filters select, form.filters input')].map((el) => el.name),
  };
})()"""


def test_dashboard_renders_in_chromium(page: DevTools, dashboard: str) -> None:
    load(page, dashboard)
    layout = page.evaluate(LAYOUT)
    path = screenshot(page, "dashboard.png")
    assert path.stat().st_size > 50_000  # a real picture, not a blank page

    assert layout["title"] == "Opportune · CPO dashboard"
    ids = {chart["id"] for chart in layout["charts"]}
    expected = {
        "chart-cpo-daily",
        "chart-funnel",
        "chart-lift-0",
        "chart-latency",
        "chart-losses",
        "chart-languages",
        "chart-survival",  # what stayed of accepted code, per arm (persistence)
        *(
            f"factor-{m}"
            for m in (
                "attempt_rate",
                "feedback_rate",
                "acceptance_rate",
                "tokens_per_accept",
                "chars_per_token",
                "cpo",
            )
        ),
    }
    assert expected <= ids
    for chart in layout["charts"]:
        width, height = chart["size"]
        assert width >= 250 and height >= 80, chart  # laid out at a readable size
        assert chart["marks"] >= 3, chart  # and something drawn in it
    assert layout["tooltips"] > 50
    assert layout["kpis"] == ["control", "fast-context"]  # one card per arm, control first
    assert layout["verdict"] in get_args(Verdict)
    assert layout["srm"] and layout["srm"].startswith("Sample ratio")
    assert layout["horizontalOverflow"] <= 0  # fits a 1280 px window
    assert layout["scripts"] == 0 and layout["resources"] == []  # nothing loaded besides the page
    assert layout["form"] == ["experiment", "from", "to", "language", "model", "budget"]
    assert problems(page) == []


def test_filters_and_refusals_in_chromium(page: DevTools, dashboard: str) -> None:
    load(page, dashboard + "?language=go&budget=120")
    layout = page.evaluate(LAYOUT)
    languages = page.evaluate(
        "[...document.querySelectorAll('#chart-languages text[font-weight=\"600\"]')].map((t) => t.textContent)"
    )
    assert languages == ["go"]
    assert page.evaluate("document.querySelector('select[name=language]').value") == "go"
    assert page.evaluate("document.querySelector('#chart-latency').textContent.includes('budget 120 ms')")
    assert len(layout["charts"]) >= 12

    # An injection attempt: refused with a message, shown as text, nothing executed.
    refused = dashboard + "?language=%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E"
    load(page, refused)
    assert page.evaluate("document.querySelectorAll('img').length") == 0
    message = page.evaluate("document.querySelector('.message.error').textContent")
    assert "Filter refused" in message and "<img src=x" in message
    screenshot(page, "dashboard-refused.png")
    # The page's own 400 status is the only thing the browser reports.
    assert problems(page) == [
        f"log: Failed to load resource: the server responded with a status of 400 (Bad Request) ({refused})"
    ]
