"""The remote backend against a real server: llama-cpp-python's OpenAI-compatible ``llama_cpp.server`` on the
embedded model, started by the tests as a separate process (n_ctx 2048, one thread).

Covered: a streamed completion, token counts from the server's tokenizer, an early stop and a cancellation
that close the stream, a read timeout, recovery once a down endpoint comes up, and a whole completion
through the engine (``start_session`` with ``model.backend = "openai"``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from opportune.server.backends.base import BackendError, Cancelled, GenerationRequest
from opportune.server.backends.http import HttpBackend
from opportune.server.config import ModelSettings
from opportune.server.documents import Document

pytestmark = pytest.mark.e2e

SERVER_EXTRAS = ("llama_cpp", "fastapi", "uvicorn", "sse_starlette", "starlette_context", "pydantic_settings")
READY_TIMEOUT_S = 180.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ModelServer:
    url: str
    model_path: Path
    process: subprocess.Popen[bytes]
    log: Path


def model_path() -> Path:
    missing = [m for m in SERVER_EXTRAS if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"needs llama-cpp-python[server] (missing: {', '.join(missing)})")
    from opportune.server.models import default_model_path

    return default_model_path(progress=False)


@contextlib.contextmanager
def model_server(port: int, logs: Path) -> Iterator[ModelServer]:
    """Start ``python -m llama_cpp.server`` on ``port`` and wait until it lists its model; always stop it."""
    path = model_path()
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"llama_cpp_server_{port}.log"
    # Output goes to a file: a pipe nobody reads would block the server once it filled.
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "llama_cpp.server",
                "--model", str(path),
                "--host", "127.0.0.1", "--port", str(port),
                "--n_ctx", "2048", "--n_threads", "1", "--n_threads_batch", "1",
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    server = ModelServer(f"http://127.0.0.1:{port}", path, process, log)
    try:
        wait_ready(server)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


def wait_ready(server: ModelServer) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(
                f"llama_cpp.server exited ({server.process.returncode}):\n{server.log.read_text()[-3000:]}"
            )
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{server.url}/v1/models", timeout=1.0).status_code == 200:
                return
        time.sleep(0.2)
    pytest.fail(f"llama_cpp.server not ready after {READY_TIMEOUT_S:g} s:\n{server.log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelServer]:
    with model_server(free_port(), tmp_path_factory.mktemp("model-server")) as server:
        yield server


@pytest.fixture
def remote(served: ModelServer) -> Iterator[HttpBackend]:
    b = HttpBackend(ModelSettings(backend="openai", endpoint=served.url))
    yield b
    b.close()


def fresh_prompt(numbers: int) -> str:
    """A prompt the server has not cached: random digits (one token each for this model)."""
    digits = " ".join(str(random.randint(10_000, 99_999)) for _ in range(numbers))
    return f"# {digits}\ndef total(values):\n    "


def test_streams_a_completion_chunk_by_chunk(remote: HttpBackend, served: ModelServer) -> None:
    seen: list[tuple[str, int]] = []
    g = remote.generate(
        GenerationRequest(
            "def add(a, b):\n    return", max_tokens=6, on_text=lambda t, n: seen.append((t, n))
        )
    )
    assert g.text.strip() and g.stop_reason in ("length", "eos")
    assert len(seen) >= 2 and seen[-1] == (g.text, g.tokens)
    assert [n for _t, n in seen] == list(range(1, len(seen) + 1))
    assert all(later.startswith(earlier) for (earlier, _), (later, _) in itertools.pairwise(seen))
    assert g.first_token_ms is not None and g.first_token_ms <= g.total_ms
    assert remote.model_id == served.model_path.stem.lower()  # the served name, without its directory


def test_token_counts_come_from_the_model_tokenizer(remote: HttpBackend, served: ModelServer) -> None:
    from llama_cpp import Llama

    vocab = Llama(model_path=str(served.model_path), vocab_only=True, verbose=False)
    text = "def fibonacci(n: int) -> int:\n    return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)\n"
    local = vocab.tokenize(text.encode(), add_bos=False, special=True)
    assert remote.count_tokens(text) == len(local)
    assert remote.tokenize(text) == vocab.tokenize(text.encode(), add_bos=True, special=True)
    assert remote.count_tokens(text) != len(text) // 4  # not the approximation


def test_should_stop_closes_the_stream_early(remote: HttpBackend) -> None:
    g = remote.generate(GenerationRequest("import os\nimport", max_tokens=32, should_stop=lambda t: bool(t)))
    assert g.stop_reason == "stop" and g.tokens == 1


def test_cancel_after_the_first_chunk_ends_the_generation(remote: HttpBackend) -> None:
    cancelled_at: list[float] = []

    def on_text(_text: str, _n: int) -> None:
        if not cancelled_at:
            cancelled_at.append(time.perf_counter())

    g = remote.generate(
        GenerationRequest(
            "class Stack:\n    def __init__(self):\n",
            max_tokens=48,
            on_text=on_text,
            cancelled=lambda: bool(cancelled_at),
        )
    )
    assert g.stop_reason == "cancelled" and 1 <= g.tokens < 48
    assert time.perf_counter() - cancelled_at[0] < 0.5
    # The server stopped that generation: the next request is served.
    assert remote.generate(GenerationRequest("x = [1, 2,", max_tokens=2)).tokens >= 1


def test_cancel_before_the_first_token_returns_at_once(remote: HttpBackend) -> None:
    started = time.perf_counter()
    seen: list[str] = []
    try:
        g = remote.generate(
            GenerationRequest(
                fresh_prompt(20),
                max_tokens=8,
                on_text=lambda t, _n: seen.append(t),
                cancelled=lambda: time.perf_counter() - started > 0.1,
            )
        )
        assert g.stop_reason == "cancelled"  # only where ~130 tokens are evaluated within 0.1 s
    except Cancelled:
        assert seen == []
    assert time.perf_counter() - started < 0.6


def test_a_tiny_read_timeout_gives_up_quickly(served: ModelServer) -> None:
    b = HttpBackend(ModelSettings(backend="openai", endpoint=served.url), read_timeout_s=0.05)
    started = time.perf_counter()
    try:
        with pytest.raises(BackendError, match=r"did not answer /v1/completions within 0\.05 s"):
            b.generate(GenerationRequest(fresh_prompt(10), max_tokens=8))
        assert time.perf_counter() - started < 1.5
    finally:
        b.close()


def test_recovers_when_the_endpoint_comes_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model_path()  # skip before anything if the server cannot run here
    secret = "sk-e2e-secret-4242"
    monkeypatch.setenv("OPPORTUNE_E2E_KEY", secret)
    port = free_port()
    b = HttpBackend(
        ModelSettings(backend="openai", endpoint=f"http://127.0.0.1:{port}", api_key_env="OPPORTUNE_E2E_KEY")
    )
    try:
        with pytest.raises(BackendError) as info:
            b.generate(GenerationRequest("def f():\n", max_tokens=2))
        assert (
            str(info.value)
            == f"cannot reach the openai server at http://127.0.0.1:{port} (connection refused)"
        )
        assert secret not in str(info.value)
        assert b.model_id == ""  # nothing learnt yet
        with model_server(port, tmp_path) as server:
            g = b.generate(GenerationRequest("def f():\n    return", max_tokens=3))
            assert g.tokens >= 1 and g.text
            assert b.model_id == server.model_path.stem.lower()  # learnt once the server answered
            b.close()  # before the server stops: an open keep-alive connection slows its shutdown
    finally:
        b.close()


class Events:
    """A telemetry store that keeps events in memory."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    def record(self, event: Any) -> None:
        self.events.append(event)

    def close(self) -> None:
        pass


async def test_engine_completes_through_the_remote_endpoint(served: ModelServer, tmp_path: Path) -> None:
    from opportune.server.session import start_session
    from opportune.telemetry import events as ev

    config = tmp_path / "opportune.toml"
    config.write_text("")
    store = Events()
    session = start_session(
        {
            "model": {"backend": "openai", "endpoint": served.url},
            # One thread on a shared CI core: give the first (cold) prompt time to be evaluated.
            "completion": {"deadlineMs": 30000, "prewarm": False, "contextTokens": 128},
        },
        config_path=config,
        store=store,
    )
    assert session.problems == []
    try:
        uri = "file:///project/shapes.py"
        text = "def square_area(side):\n    return side * side\n\n\ndef rectangle_area(width, height):\n    return "
        session.engine.open(uri, text, "python", 1)
        suggestion = await session.engine.complete(
            uri, Document(uri, text).position_at(len(text)), invoked=True
        )
        assert suggestion is not None and suggestion.text.strip() and suggestion.source == "model"
        assert session.engine.model_id == served.model_path.stem.lower()
        responses = [e for e in store.events if isinstance(e, ev.Response)]
        assert responses and responses[-1].completion_id == suggestion.completion_id
        assert responses[-1].common.model_id == served.model_path.stem.lower()
    finally:
        session.close()


async def test_ab_experiment_embedded_against_remote_from_two_merged_stores(
    served: ModelServer, tmp_path: Path
) -> None:
    """Arm "embedded" runs the local GGUF, arm "remote" the same model behind the OpenAI-compatible server;
    two installs (one per arm) each write their own store; the stores merged give one experiment."""
    from opportune.server.session import start_session
    from opportune.telemetry.assignment import assign_arm
    from opportune.telemetry.experiments import analyse
    from opportune.telemetry.report import render_text
    from opportune.telemetry.store import open_events

    arms = [
        {"name": "embedded", "weight": 1, "model": {"backend": "llama"}},
        {"name": "remote", "weight": 1, "model": {"backend": "openai", "endpoint": served.url}},
    ]
    installs: dict[str, str] = {}
    for i in itertools.count():
        arm = assign_arm("backend-ab", f"install-{i}", [("embedded", 1.0), ("remote", 1.0)])
        installs.setdefault(arm, f"install-{i}")
        if len(installs) == 2:
            break
    config = tmp_path / "opportune.toml"
    config.write_text("")
    text = (
        "def square_area(side):\n    return side * side\n\n\ndef rectangle_area(width, height):\n    return "
    )
    stores = []
    for arm, install in sorted(installs.items()):
        db = tmp_path / f"{install}.db"
        stores.append(db)
        session = start_session(
            {
                "experiment": {"name": "backend-ab", "arms": arms},
                "completion": {"deadlineMs": 30000, "prewarm": False, "contextTokens": 128},
                "telemetry": {"db": str(db), "installId": install, "flushIntervalS": 0.1},
            },
            config_path=config,
        )
        assert session.problems == [] and session.config.arm == arm
        try:
            uri = f"file:///project/{install}/shapes.py"
            session.engine.open(uri, text, "python", 1)
            suggestion = await session.engine.complete(
                uri, Document(uri, text).position_at(len(text)), invoked=True
            )
            assert suggestion is not None and suggestion.text.strip()
            session.engine.did_show(suggestion.completion_id)
            session.engine.did_accept(suggestion.completion_id)
        finally:
            session.close()
    merged = open_events(stores)
    merged_twice = open_events([*stores, stores[0]])  # the same install's store given twice counts once
    assert len(merged_twice.opportunities) == len(merged.opportunities) == 2
    result = analyse(merged, "backend-ab", control="embedded").to_dict()
    text_report = render_text(stores, experiment="backend-ab", control="embedded")
    assert "embedded" in text_report and "remote" in text_report
    by_arm = {a["arm"]: a for a in result["arms"]}
    assert set(by_arm) == {"embedded", "remote"}
    assert all(a["units"] == 1 for a in by_arm.values())
    models = {row["arm"]: row["model_id"] for _, row in merged.responses.iterrows()}
    assert models["remote"] == served.model_path.stem.lower() and models["embedded"] != models["remote"]
