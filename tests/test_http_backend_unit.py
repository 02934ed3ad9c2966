"""The remote backend's wire formats and failure handling, against scripted HTTP servers (httpx.MockTransport)
and one real closed port.

The real thing, a llama_cpp.server process on the embedded model, is in test_http_backend.py (e2e); these
tests cover what that server cannot show: llama-server's /infill and /completion formats, the 501 fallback,
prewarm, a rejected API key, servers without a tokenizer, stalled streams and retries.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from opportune.server.backends.base import BackendError, Cancelled, GenerationRequest
from opportune.server.backends.http import HttpBackend, approximate_tokens, display_model_id
from opportune.server.config import ModelSettings
from opportune.server.prompt import Prompt, PromptInput, build_prompt
from opportune.server.templates import QWEN

SECRET = "sk-test-0123456789abcdef"

Handler = Callable[[httpx.Request], httpx.Response]


def sse(*items: Any, done: bool = True) -> bytes:
    lines = [f"data: {json.dumps(item)}\n\n" for item in items]
    if done:
        lines.append("data: [DONE]\n\n")
    return "".join(lines).encode()


def openai_chunk(text: str, finish: str | None = None) -> dict[str, Any]:
    return {"object": "text_completion", "choices": [{"text": text, "index": 0, "finish_reason": finish}]}


def event_stream(body: bytes | AsyncIterator[bytes]) -> httpx.Response:
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)


class Server:
    """A scripted server: routes by path, records every request it was sent."""

    def __init__(self, routes: dict[str, Handler], models: list[str] | None = None) -> None:
        self.routes = routes
        self.models = models if models is not None else ["/srv/models/tiny-coder.Q4_K_M.gguf"]
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path == "/v1/models" and "/v1/models" not in self.routes:
            return httpx.Response(200, json={"object": "list", "data": [{"id": m} for m in self.models]})
        handler = self.routes.get(request.url.path)
        if handler is None:
            return httpx.Response(404, json={"detail": "Not Found"})
        return handler(request)

    def bodies(self, path: str) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.requests if r.url.path == path]


def backend(server: Server, kind: str = "openai", **kwargs: Any) -> HttpBackend:
    settings = ModelSettings(
        backend=kind,  # type: ignore[arg-type]
        endpoint=kwargs.pop("endpoint", "http://models.internal:8000"),
        remote_model=kwargs.pop("remote_model", ""),
        api_key_env=kwargs.pop("api_key_env", "OPPORTUNE_TEST_KEY"),
    )
    return HttpBackend(settings, transport=httpx.MockTransport(server), **kwargs)


@pytest.fixture(autouse=True)
def _no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPPORTUNE_TEST_KEY", raising=False)


def test_openai_stream_is_handed_over_chunk_by_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPPORTUNE_TEST_KEY", SECRET)
    chunks = [
        openai_chunk("    return"),
        openai_chunk(" a"),
        openai_chunk(" + b"),
        openai_chunk("", "length"),
    ]
    server = Server({"/v1/completions": lambda _r: event_stream(sse(*chunks))})
    b = backend(server, endpoint="http://models.internal:8000/v1/")
    seen: list[tuple[str, int]] = []
    g = b.generate(
        GenerationRequest("def add(a, b):\n", max_tokens=3, on_text=lambda t, n: seen.append((t, n)))
    )
    b.close()
    assert g.text == "    return a + b"
    assert seen == [("    return", 1), ("    return a", 2), ("    return a + b", 3)]
    assert g.stop_reason == "length" and g.tokens == 3
    assert g.first_token_ms is not None and len(g.token_times_ms) == 3
    [body] = server.bodies("/v1/completions")
    assert body == {
        "prompt": "def add(a, b):\n",
        "max_tokens": 3,
        "temperature": 0.0,
        "stream": True,
        "model": "/srv/models/tiny-coder.Q4_K_M.gguf",  # the served name, as the server wants it back
    }
    assert b.model_id == "tiny-coder.q4_k_m"  # ...but telemetry never sees the server's directories
    completion = next(r for r in server.requests if r.url.path == "/v1/completions")
    assert completion.headers["authorization"] == f"Bearer {SECRET}"
    assert "suffix" not in body  # a prefix-only prompt: no FIM suffix without structured parts


def test_configured_model_name_wins_and_stops_cut_the_text() -> None:
    chunks = [openai_chunk("x = 1"), openai_chunk("\n\n"), openai_chunk("y = 2")]
    server = Server({"/v1/completions": lambda _r: event_stream(sse(*chunks))})
    b = backend(server, remote_model="Qwen/Qwen2.5-Coder 1.5B")
    g = b.generate(GenerationRequest("", max_tokens=8, stops=("\n\n",)))
    b.close()
    assert g.text == "x = 1" and g.stop_reason == "eos"
    assert server.bodies("/v1/completions")[0]["model"] == "Qwen/Qwen2.5-Coder 1.5B"
    assert server.bodies("/v1/completions")[0]["stop"][0] == "\n\n"  # then the Qwen family's end markers
    assert b.model_id == "qwen2.5-coder-1.5b"


def llama_server_stream(pieces: list[str], stop_type: str = "limit") -> bytes:
    items: list[dict[str, Any]] = [{"content": p, "stop": False} for p in pieces]
    items.append(
        {
            "content": "",
            "stop": True,
            "stop_type": stop_type,
            "tokens_predicted": len(pieces),
            "tokens_evaluated": 40,
            "timings": {"prompt_n": 6, "prompt_ms": 12.5, "predicted_n": len(pieces)},
        }
    )
    return sse(*items, done=False)  # llama-server's native endpoints end without [DONE]


def test_llama_server_infill_request_and_answer() -> None:
    server = Server(
        {
            "/infill": lambda _r: event_stream(llama_server_stream(["return", " a", " + b"], "eos")),
        }
    )
    b = backend(server, kind="llama-server", read_timeout_s=2.5)
    g = b.generate(GenerationRequest("def add(a, b):\n    ", max_tokens=16, temperature=0.2))
    b.close()
    assert g.text == "return a + b" and g.stop_reason == "eos" and g.tokens == 3
    assert g.prompt_tokens == 40 and g.reused_tokens == 34 and g.prefill_ms == 12.5
    [body] = server.bodies("/infill")
    assert body == {
        "input_prefix": "def add(a, b):\n    ",
        "input_suffix": "",
        "input_extra": [],
        "prompt": "",
        "n_predict": 16,
        "temperature": 0.2,
        "stream": True,
        "cache_prompt": True,
        "t_max_predict_ms": 2500,
    }


def test_llama_server_without_infill_falls_back_to_completion_once() -> None:
    refused = httpx.Response(
        501, json={"error": {"code": 501, "message": "Infill is not supported by this model", "type": "x"}}
    )
    server = Server(
        {
            "/infill": lambda _r: refused,
            "/completion": lambda _r: event_stream(llama_server_stream(["pass"])),
        }
    )
    b = backend(server, kind="llama-server")
    first = b.generate(GenerationRequest("def f():\n    ", max_tokens=4))
    second = b.generate(GenerationRequest("def g():\n    ", max_tokens=4))
    b.close()
    assert first.text == second.text == "pass" and first.stop_reason == "length"
    assert len(server.bodies("/infill")) == 1  # learnt once, not asked at every keystroke
    bodies = server.bodies("/completion")
    assert [x["prompt"] for x in bodies] == ["def f():\n    ", "def g():\n    "]
    assert all(x["cache_prompt"] is True and x["n_predict"] == 4 for x in bodies)


def structured_prompt() -> Prompt:
    """The prompt the builder makes for a cursor in ``area`` with one project file, as the engine does."""
    text = "def area(r):\n    return \n\nprint(area(2))\n"
    cursor = text.index("return ") + len("return ")
    data = PromptInput(text, cursor, "geo.py", "python", None, neighbours=(("util.py", "PI = 3.14\n"),))
    return build_prompt(data, budget_tokens=200, count_tokens=approximate_tokens, suffix_lines=8)


def test_the_prompt_value_is_sent_as_infill_fields_and_as_an_openai_suffix() -> None:
    prompt = structured_prompt()
    server = Server(
        {
            "/infill": lambda _r: event_stream(llama_server_stream(["PI"])),
            "/v1/completions": lambda _r: event_stream(sse(openai_chunk("PI", "stop"))),
        }
    )
    remote = backend(server, kind="llama-server")
    assert remote.takes_suffix
    remote.generate(GenerationRequest(prompt, max_tokens=4))
    remote.close()
    [body] = server.bodies("/infill")
    assert body["input_prefix"] == "# geo.py\ndef area(r):\n    return "
    assert body["input_suffix"] == "\n\nprint(area(2))\n"
    assert body["input_extra"] == [{"filename": "util.py", "text": "PI = 3.14\n"}]
    openai = backend(server)  # a model whose name names no FIM family: the suffix field
    assert openai.fim is None and openai.takes_suffix
    g = openai.generate(GenerationRequest(prompt, max_tokens=4))
    openai.close()
    [body] = server.bodies("/v1/completions")
    assert body["prompt"] == "# util.py\nPI = 3.14\n\n# geo.py\ndef area(r):\n    return "
    assert body["suffix"] == "\n\nprint(area(2))\n"
    assert g.stop_reason == "eos"


def test_an_openai_model_named_as_a_fim_family_gets_its_template_in_the_prompt() -> None:
    server = Server({"/v1/completions": lambda _r: event_stream(sse(openai_chunk("PI<|file_sep|>x")))})
    remote = backend(server, remote_model="Qwen/Qwen2.5-Coder-1.5B")
    assert remote.fim is QWEN
    g = remote.generate(GenerationRequest(structured_prompt(), max_tokens=4))
    remote.close()
    [body] = server.bodies("/v1/completions")
    assert body["prompt"] == (
        "<|file_sep|>util.py\nPI = 3.14\n<|file_sep|>geo.py\n"
        "<|fim_prefix|>def area(r):\n    return <|fim_suffix|>\n\nprint(area(2))\n<|fim_middle|>"
    )
    assert "suffix" not in body and body["stop"] == list(QWEN.stops[:4])
    assert g.text == "PI"  # the family's own end marker is cut here, past the API's four stops


def test_prewarm_evaluates_without_generating_on_llama_server_only() -> None:
    server = Server(
        {
            "/infill": lambda _r: httpx.Response(
                200, json={"content": "", "tokens_evaluated": 90, "timings": {"prompt_n": 37}}
            )
        }
    )
    remote = backend(server, kind="llama-server")
    assert remote.prewarm("import os\n", lambda: False) == 37
    with pytest.raises(Cancelled):
        remote.prewarm("import os\n", lambda: True)
    remote.close()
    [body] = server.bodies("/infill")
    assert body["n_predict"] == 0 and body["cache_prompt"] is True and body["stream"] is False
    assert body["input_prefix"] == "import os\n"
    openai = backend(server)
    before = len(server.requests)
    assert openai.prewarm("import os\n", lambda: False) == 0
    openai.close()
    assert server.requests[before:] == []  # nothing to warm on an OpenAI-style server


def test_rejected_key_names_the_variable_never_the_key(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OPPORTUNE_TEST_KEY", SECRET)
    caplog.set_level(logging.DEBUG)
    echo = httpx.Response(401, json={"error": {"message": f"Incorrect API key provided: {SECRET}"}})
    server = Server({"/v1/completions": lambda _r: echo, "/v1/models": lambda _r: echo})
    b = backend(server)
    with pytest.raises(BackendError) as info:
        b.generate(GenerationRequest("x", max_tokens=2))
    b.close()
    message = str(info.value)
    assert "refused the API key (HTTP 401)" in message and "$OPPORTUNE_TEST_KEY" in message
    assert SECRET not in message and SECRET not in caplog.text and SECRET not in repr(vars(b))


def test_credentials_in_the_url_are_sent_but_never_shown() -> None:
    server = Server({"/v1/completions": lambda _r: httpx.Response(404, json={"detail": "Not Found"})})
    b = backend(server, endpoint="https://alice:hunter2@models.internal/v1?token=abc")
    with pytest.raises(BackendError) as info:
        b.generate(GenerationRequest("x", max_tokens=2))
    b.close()
    assert b.endpoint == "https://models.internal"
    assert "hunter2" not in str(info.value) and "abc" not in str(info.value)
    assert "has no /v1/completions (HTTP 404)" in str(info.value)
    assert server.requests[-1].headers["authorization"].startswith("Basic ")


def test_token_counts_use_the_server_tokenizer_without_its_bos() -> None:
    vocab = {"": [1], "def f():": [1, 10, 11, 12, 13]}
    server = Server(
        {
            "/extras/tokenize": lambda r: httpx.Response(
                200, json={"tokens": vocab.get(json.loads(r.content)["input"], [1, 7, 8, 9])}
            )
        }
    )
    b = backend(server)
    assert b.count_tokens("def f():") == 4
    assert b.count_tokens("def f():") == 4
    assert b.tokenize("def f():") == [1, 10, 11, 12, 13]
    b.close()
    bodies = [x["input"] for x in server.bodies("/extras/tokenize")]
    probes = [x for x in bodies if x.startswith(("<", "▁"))]  # which FIM family's tokens it has: none
    assert b.fim is None and probes and not b.takes_suffix
    # probe, count (then cached), ids
    assert [x for x in bodies if x not in probes] == ["", "def f():", "def f():"]


def test_an_openai_servers_tokenizer_says_its_fim_family_whatever_the_models_name() -> None:
    singles = {"<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"}

    def tokenize(r: httpx.Request) -> httpx.Response:
        text = json.loads(r.content)["input"]
        return httpx.Response(200, json={"tokens": [1, 5] if text in singles else [1] + [9] * len(text)})

    server = Server(
        {"/extras/tokenize": tokenize, "/v1/completions": lambda _r: event_stream(sse(openai_chunk("PI")))},
        models=["/models/my-finetune.gguf"],
    )
    b = backend(server)
    assert b.fim is QWEN and b.takes_suffix
    b.generate(GenerationRequest(structured_prompt(), max_tokens=2))
    b.close()
    [body] = server.bodies("/v1/completions")
    assert body["prompt"].startswith("<|file_sep|>util.py\n") and "suffix" not in body


def test_token_counts_are_approximated_without_a_tokenize_endpoint() -> None:
    server = Server({})
    b = backend(server)
    text = "for item in items:\n    total += item.price\n"
    assert b.count_tokens(text) == approximate_tokens(text) == (len(text) + 3) // 4
    with pytest.raises(BackendError, match="has no tokenize endpoint"):
        b.tokenize(text)
    b.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_endpoint_is_one_clear_fast_error(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OPPORTUNE_TEST_KEY", SECRET)
    caplog.set_level(logging.DEBUG)
    port = closed_port()
    t0 = time.perf_counter()
    b = HttpBackend(
        ModelSettings(backend="openai", endpoint=f"http://127.0.0.1:{port}", api_key_env="OPPORTUNE_TEST_KEY")
    )
    with pytest.raises(BackendError) as info:
        b.generate(GenerationRequest("def f():\n", max_tokens=4))
    message = str(info.value)
    assert message == f"cannot reach the openai server at http://127.0.0.1:{port} (connection refused)"
    assert time.perf_counter() - t0 < 3.0
    t1 = time.perf_counter()
    assert b.count_tokens("abcdefgh") == 2  # approximated, without waiting on the dead endpoint
    with pytest.raises(BackendError):
        b.generate(GenerationRequest("def f():\n", max_tokens=4))
    assert time.perf_counter() - t1 < 0.5
    b.close()
    assert SECRET not in message and SECRET not in caplog.text


class Flaky:
    """Refuses connections to the paths it is told to, like a server being restarted."""

    def __init__(self, refusals: int, paths: tuple[str, ...] = ("/v1/completions", "/v1/models")) -> None:
        self.refusals = refusals
        self.paths = paths
        self.attempts = 0
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path in self.paths:
            with self.lock:
                self.attempts += 1
                if self.attempts <= self.refusals:
                    raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        if request.url.path == "/v1/completions":
            return event_stream(sse(openai_chunk("ok", "stop")))
        return httpx.Response(404)


def test_connection_errors_are_retried_within_the_budget() -> None:
    flaky = Flaky(refusals=2, paths=("/v1/completions",))
    b = HttpBackend(
        ModelSettings(backend="openai", endpoint="http://models.internal"),
        transport=httpx.MockTransport(flaky),
    )
    assert b.generate(GenerationRequest("x", max_tokens=2)).text == "ok"
    assert flaky.attempts == 3  # two refusals, then the retry that got through
    flaky.attempts, flaky.refusals = 0, 1000
    t0 = time.perf_counter()
    with pytest.raises(BackendError, match="cannot reach"):
        b.generate(GenerationRequest("x", max_tokens=2))
    assert flaky.attempts == 3 and time.perf_counter() - t0 < 1.0  # bounded: not a retry loop
    b.close()


def test_a_down_endpoint_is_tried_again_after_the_pause() -> None:
    flaky = Flaky(refusals=1000)
    b = HttpBackend(
        ModelSettings(backend="openai", endpoint="http://models.internal"),
        transport=httpx.MockTransport(flaky),
        retry_after_s=0.3,
    )
    with pytest.raises(BackendError, match="cannot reach"):
        b.generate(GenerationRequest("x", max_tokens=2))
    tried = flaky.attempts
    with pytest.raises(BackendError, match="cannot reach"):
        b.generate(GenerationRequest("x", max_tokens=2))
    assert flaky.attempts == tried  # within the pause: failed fast, no connection attempt
    time.sleep(0.35)
    with pytest.raises(BackendError, match="cannot reach"):
        b.generate(GenerationRequest("x", max_tokens=2))
    assert flaky.attempts > tried  # after it: tried again (still down)
    flaky.refusals = 0  # the server is back
    time.sleep(0.35)
    assert b.generate(GenerationRequest("x", max_tokens=2)).text == "ok"
    b.close()


def stalling(pieces: list[str], closed: threading.Event) -> AsyncIterator[bytes]:
    async def body() -> AsyncIterator[bytes]:
        try:
            for p in pieces:
                yield sse(openai_chunk(p), done=False)
            await asyncio.sleep(30)  # a server stuck in prefill or decode
        finally:
            closed.set()

    return body()


def test_cancel_while_waiting_closes_the_response_at_once() -> None:
    closed = threading.Event()
    server = Server({"/v1/completions": lambda _r: event_stream(stalling([], closed))})
    b = backend(server)
    t0 = time.perf_counter()
    with pytest.raises(Cancelled):
        b.generate(GenerationRequest("x", max_tokens=8, cancelled=lambda: time.perf_counter() - t0 > 0.1))
    assert time.perf_counter() - t0 < 0.6
    assert closed.wait(2)  # the HTTP response was closed, not left to stream into the void
    b.close()


def test_cancel_after_some_tokens_keeps_them() -> None:
    closed = threading.Event()
    server = Server({"/v1/completions": lambda _r: event_stream(stalling(["foo", "bar"], closed))})
    b = backend(server)
    seen: list[str] = []
    g = b.generate(
        GenerationRequest(
            "x", max_tokens=8, on_text=lambda t, _n: seen.append(t), cancelled=lambda: len(seen) >= 2
        )
    )
    assert g.text == "foobar" and g.stop_reason == "cancelled" and g.tokens == 2
    assert closed.wait(2)
    b.close()


def test_should_stop_closes_the_stream() -> None:
    closed = threading.Event()
    server = Server({"/v1/completions": lambda _r: event_stream(stalling(["a\n", "b"], closed))})
    b = backend(server)
    t0 = time.perf_counter()
    g = b.generate(GenerationRequest("x", max_tokens=8, should_stop=lambda t: "\n" in t))
    assert g.text == "a\n" and g.stop_reason == "stop"
    assert time.perf_counter() - t0 < 1.0 and closed.wait(2)
    b.close()


def test_settings_errors_are_for_the_user() -> None:
    with pytest.raises(BackendError, match=r"model\.endpoint is empty"):
        HttpBackend(ModelSettings(backend="openai"))
    with pytest.raises(BackendError, match="http:// or https://"):
        HttpBackend(ModelSettings(backend="llama-server", endpoint="ftp://models.internal"))


@pytest.mark.parametrize(
    ("served", "shown"),
    [
        ("/root/.cache/opportune/gemma-3-270m-q4_k_m.gguf", "gemma-3-270m-q4_k_m"),
        ("C:\\models\\Qwen2.5-Coder-1.5B.gguf", "qwen2.5-coder-1.5b"),
        ("bigcode/starcoder2-3b", "starcoder2-3b"),
    ],
)
def test_display_model_id(served: str, shown: str) -> None:
    assert display_model_id(served) == shown


def test_a_busy_tokenizer_is_not_waited_for_at_every_count() -> None:
    state = {"busy": False}

    def tokenize(request: httpx.Request) -> httpx.Response:
        if state["busy"]:
            raise httpx.ReadTimeout("busy generating", request=request)
        return httpx.Response(200, json={"tokens": [1] + [7] * len(json.loads(request.content)["input"])})

    server = Server({"/extras/tokenize": tokenize})
    b = backend(server)
    assert b.count_tokens("abc") == 3  # the server's count (one id a character here), not the approximation
    state["busy"] = True
    asked = len(server.requests)
    assert b.count_tokens("abcdefgh") == 2  # timed out: approximated
    assert b.count_tokens("abcdefghijkl") == 3  # approximated without asking again
    assert len(server.requests) == asked + 1
    state["busy"] = False
    assert b.tokenize("ab") == [1, 7, 7]  # an explicit tokenize still asks
    b.close()


def test_a_stream_that_stalls_after_some_tokens_keeps_them() -> None:
    async def body() -> AsyncIterator[bytes]:
        yield sse(openai_chunk("return"), openai_chunk(" x"), done=False)
        raise httpx.ReadTimeout("stalled")

    server = Server({"/v1/completions": lambda _r: event_stream(body())})
    b = backend(server)
    g = b.generate(GenerationRequest("def f(x):\n    ", max_tokens=8))
    b.close()
    assert g.text == "return x" and g.stop_reason == "deadline" and g.tokens == 2


def test_a_proxy_page_as_first_answer_is_one_message_then_recovered() -> None:
    """A proxy's HTML page on /v1/models made the backend fail for good ("Expecting value: line 1
    column 1"); now it is one clear error, then tried again (with backoff) until the real server answers."""
    html = httpx.Response(502, headers={"content-type": "text/html"}, content=b"<html>Bad gateway</html>")
    page = httpx.Response(200, headers={"content-type": "text/html"}, content=b"<html>Sign in</html>")
    state = {"good": False}

    def models(_r: httpx.Request) -> httpx.Response:
        if state["good"]:
            return httpx.Response(200, json={"data": [{"id": "coder"}]})
        return page

    def completions(_r: httpx.Request) -> httpx.Response:
        return event_stream(sse(openai_chunk("ok", "stop"))) if state["good"] else html

    server = Server({"/v1/models": models, "/v1/completions": completions})
    b = backend(server, retry_after_s=0.2)
    errors = []
    for _ in range(3):
        with pytest.raises(BackendError) as info:
            b.generate(GenerationRequest("x", max_tokens=2))
        errors.append(str(info.value))
    assert "not JSON" in errors[0] and "text/html" in errors[0], errors[0]
    assert len(set(errors)) == 1, "one message, not a new one per keystroke"
    state["good"] = True
    deadline = time.monotonic() + 5
    text = None
    while text is None and time.monotonic() < deadline:
        try:
            text = b.generate(GenerationRequest("x", max_tokens=2)).text
        except BackendError:
            time.sleep(0.1)
    b.close()
    assert text == "ok", "the backend never recovered once the endpoint answered properly"
    assert b.model_id == "coder"


def test_garbage_with_status_200_on_completions_is_an_error_not_a_crash() -> None:
    garbage = httpx.Response(200, headers={"content-type": "application/octet-stream"}, content=b"\x00\xff{")
    server = Server({"/v1/completions": lambda _r: garbage})
    b = backend(server)
    with pytest.raises(BackendError, match="not JSON"):
        b.generate(GenerationRequest("x", max_tokens=2))
    b.close()


def test_a_key_echoed_past_the_cut_is_masked_whole(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The error body was cut to 200 characters before the key was masked: a key straddling the cut
    showed its first characters in the pop-up and the log."""
    key = "sk-live-" + "abcdefghij" * 4  # 48 characters
    monkeypatch.setenv("OPPORTUNE_TEST_KEY", key)
    caplog.set_level(logging.DEBUG)
    message = "x" * 185 + f" key {key} was rejected"
    echo = httpx.Response(400, json={"error": {"message": message}})
    server = Server({"/v1/completions": lambda _r: echo})
    b = backend(server)
    with pytest.raises(BackendError) as info:
        b.generate(GenerationRequest("x", max_tokens=2))
    b.close()
    shown = str(info.value) + caplog.text
    for n in range(8, len(key) + 1):
        assert key[:n] not in shown, f"{n} characters of the key leaked: {shown[-300:]}"


def test_openai_logprobs_become_token_probabilities_and_a_refusal_is_asked_again_without() -> None:
    chunk = {
        "choices": [
            {
                "text": "return a",
                "index": 0,
                "finish_reason": None,
                "logprobs": {"tokens": ["return", " a"], "token_logprobs": [-0.1, -2.3]},
            }
        ]
    }
    server = Server({"/v1/completions": lambda _r: event_stream(sse(chunk, openai_chunk("", "stop")))})
    b = backend(server)
    seen: list[tuple[int, float]] = []
    g = b.generate(
        GenerationRequest("def f(a):\n    ", max_tokens=4, on_confidence=lambda at, p: seen.append((at, p)))
    )
    assert g.text == "return a"
    assert [at for at, _ in seen] == [0, 6] and seen[0][1] == pytest.approx(0.905, abs=0.001)
    assert seen[1][1] == pytest.approx(0.100, abs=0.001)
    assert server.bodies("/v1/completions")[0]["logprobs"] == 1
    b.close()
    # llama_cpp.server without logits_all refuses logprobs: the request is sent again without, once.
    calls: list[dict[str, Any]] = []

    def refuse_logprobs(r: httpx.Request) -> httpx.Response:
        body = json.loads(r.content)
        calls.append(body)
        if "logprobs" in body:
            return httpx.Response(
                500, json={"detail": "logprobs is not supported for models created with logits_all=False"}
            )
        return event_stream(sse(openai_chunk("ok", "stop")))

    strict = Server({"/v1/completions": refuse_logprobs})
    b = backend(strict)
    for _ in range(2):
        assert (
            b.generate(GenerationRequest("x", max_tokens=2, on_confidence=lambda _a, _p: None)).text == "ok"
        )
    b.close()
    assert ["logprobs" in c for c in calls] == [True, False, False]


def test_llama_server_token_probabilities_in_either_format() -> None:
    items = [
        {
            "content": "PI",
            "stop": False,
            "completion_probabilities": [{"id": 5, "token": "PI", "logprob": -0.5}],
        },
        {
            "content": " *",
            "stop": False,
            "completion_probabilities": [{"content": " *", "probs": [{"tok_str": " *", "prob": 0.25}]}],
        },
        {"content": "", "stop": True, "stop_type": "eos", "tokens_predicted": 2, "tokens_evaluated": 9},
    ]
    server = Server({"/infill": lambda _r: event_stream(sse(*items, done=False))})
    remote = backend(server, kind="llama-server")
    seen: list[tuple[int, float]] = []
    remote.generate(GenerationRequest("x", max_tokens=4, on_confidence=lambda at, p: seen.append((at, p))))
    remote.close()
    assert seen == [(0, pytest.approx(0.6065, abs=0.001)), (2, 0.25)]
    assert server.bodies("/infill")[0]["n_probs"] == 1
