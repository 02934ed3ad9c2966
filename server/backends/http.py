"""Remote inference: an OpenAI-compatible ``/v1/completions`` endpoint, or llama.cpp's ``llama-server``.

This is how Opportune scales past one machine: the prompt is built here as for the embedded model and sent
to a serving engine (vLLM, TGI, llama-server, llama-cpp-python's ``llama_cpp.server``), whose tokens are
streamed back (server-sent events) and handed to the engine one chunk at a time.

Requests run on a private asyncio loop on a daemon thread, not as blocking reads on the model worker: a
blocking socket read cannot be interrupted, so a superseded request would hold the single model worker until
the server sent its first token (a whole prefill on a CPU server).  The worker instead waits on a queue and
polls ``request.cancelled()`` every few milliseconds; cancelling the asyncio task closes the HTTP response at
once, which is also how the server learns to stop generating.

An unreachable endpoint is reported as one ``BackendError`` and then left alone for ``RETRY_AFTER_S`` (calls
fail fast instead of each waiting for a connect timeout); the next call after that tries again, so the
backend recovers by itself when the server comes back.  The API key is read from the environment variable
named in the settings at each request and never kept, logged or put into a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import math
import os
import queue
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
from httpx_sse import EventSource

from opportune.server.backends.base import (
    BackendError,
    Cancelled,
    Generation,
    GenerationRequest,
    StopReason,
)
from opportune.server.prompt import Prompt, as_prompt
from opportune.server.templates import FimTemplate, detect_template, render, template_for_name

if TYPE_CHECKING:
    from opportune.server.config import ModelSettings

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 1.0
"""A server on the same network accepts a connection in milliseconds; one that takes a second is down."""
READ_TIMEOUT_S = 10.0
"""Default longest wait for the next byte, the first token included (a long prefill on a CPU server)."""
PROBE_TIMEOUT_S = 2.0
"""Longest wait for the model list when the backend starts (it runs once, off the request path)."""
TOKENIZE_TIMEOUT_S = 0.5
"""Longest wait for a remote token count; past it the count is approximated rather than holding the prompt."""
RETRY_AFTER_S = 1.0
"""After a failed connection, calls fail at once for this long, then the endpoint is tried again."""
RETRIES = 2
"""Further attempts after a connection error (never after the server started answering)."""
RETRY_BACKOFF_S = 0.05
"""First pause between connection attempts; doubled each time."""
POLL_S = 0.02
"""How often a waiting request checks whether it was cancelled."""
CHARS_PER_TOKEN = 4
"""The approximation used when the server cannot count tokens (code runs at 3-4 characters a token)."""
TOKEN_COUNT_CACHE = 512
"""Token counts kept per text: prompt assembly counts the same header and outline lines at every keystroke."""
TOKENIZER_PAUSE_S = 5.0
"""After a tokenize request timed out (a server busy generating), counts are approximated this long."""


def approximate_tokens(text: str) -> int:
    """A token count without a tokenizer: about four characters a token."""
    return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


def display_model_id(name: str) -> str:
    """The remote model name as telemetry shows it: no directories of the server's disk, no .gguf."""
    base = name.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    if base.lower().endswith(".gguf"):
        base = base[: -len(".gguf")]
    return base.strip().replace(" ", "-").lower()


@dataclass(frozen=True)
class _TokenizeRoute:
    """One server family's tokenize endpoint: its path, request body and answer."""

    path: str
    body: Callable[[str, str], dict[str, Any]]  # (text, model name) -> JSON body

    @staticmethod
    def ids(answer: Any) -> list[int]:
        tokens = answer.get("tokens") if isinstance(answer, Mapping) else None
        if not isinstance(tokens, list):
            raise ValueError("no token list in the tokenize answer")
        # llama-server answers [{"id": .., "piece": ..}] when asked for pieces; plain ids otherwise.
        return [int(t["id"]) if isinstance(t, Mapping) else int(t) for t in tokens]


# llama-server: POST /tokenize {content}; llama_cpp.server: POST /extras/tokenize {input};
# vLLM: POST /tokenize {model, prompt}.  Each answers {"tokens": [...]}.
_LLAMA_SERVER_TOKENIZE = _TokenizeRoute("/tokenize", lambda text, _model: {"content": text})
_OPENAI_TOKENIZE = (
    _TokenizeRoute("/extras/tokenize", lambda text, _model: {"input": text}),
    _TokenizeRoute("/tokenize", lambda text, model: {"prompt": text, **({"model": model} if model else {})}),
)


class _HttpStatus(Exception):
    """The server answered with an HTTP error; ``detail`` is its own short explanation."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.detail = detail


class _BadAnswer(Exception):
    """The server answered, but not with what the API says (HTML from a proxy, garbage, the wrong JSON)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


BAD_ANSWER_BACKOFF_MAX = 16
"""After answers that are not the API's, the pause before trying again doubles up to this many times the
usual one: a proxy's error page may stay for minutes, and each try costs the user nothing but a request."""

_END = object()


class _Unanswered(Exception):
    """The server's tokenizer did not answer (busy or down): a question to ask again later."""


@dataclass
class _Collector:
    """Accumulates a streamed generation, in either wire format, and decides when to close the stream."""

    request: GenerationRequest
    started: float
    extra_stops: tuple[str, ...] = ()  # the FIM format's own end markers, cut here past the API's four
    text: str = ""
    tokens: int = 0
    reason: StopReason | None = None
    first_token_ms: float | None = None
    times: list[float] = field(default_factory=list)
    server_tokens: int | None = None
    prompt_tokens: int = 0
    reused_tokens: int = 0
    prefill_ms: float | None = None

    def feed(self, item: Any) -> StopReason | None:
        """Take one decoded chunk; returns a reason to close the stream early, or None to read on."""
        piece, finish = self._parse(item)
        request = self.request
        if piece and request.on_confidence is not None:
            at = len(self.text)
            for token, probability in _token_probabilities(item):
                request.on_confidence(at, probability)
                at += len(token)
        if piece:
            now = (time.perf_counter() - self.started) * 1000
            self.times.append(now)
            if self.first_token_ms is None:
                self.first_token_ms = now
            self.tokens += 1
            self.text += piece
            stops = (*request.stops, *self.extra_stops)
            hits = [self.text.index(s) for s in stops if s and s in self.text]
            if hits:
                self.text = self.text[: min(hits)]
                return "eos"
            if request.on_text:
                request.on_text(self.text, self.tokens)
            if request.should_stop(self.text):
                return "stop"
        if finish is not None:
            self.reason = finish
        if request.cancelled():
            return "cancelled"
        return None

    def _parse(self, item: Any) -> tuple[str, StopReason | None]:
        if not isinstance(item, Mapping):
            return "", None
        if "choices" in item:  # OpenAI: {"choices": [{"text", "finish_reason"}], "usage"?}
            choices = item.get("choices") or [{}]
            choice = choices[0] if isinstance(choices[0], Mapping) else {}
            usage = item.get("usage")
            if isinstance(usage, Mapping):
                self.server_tokens = _int(usage.get("completion_tokens"), self.server_tokens)
                self.prompt_tokens = _int(usage.get("prompt_tokens"), self.prompt_tokens) or 0
            finish = choice.get("finish_reason")
            reason: StopReason | None = None
            if finish == "length":
                reason = "length"
            elif finish:
                reason = "eos"
            return str(choice.get("text") or ""), reason
        # llama-server: {"content", "stop", "stop_type", "timings", "tokens_evaluated", "tokens_cached", ...}
        piece = str(item.get("content") or "")
        if not item.get("stop"):
            return piece, None
        self.server_tokens = _int(item.get("tokens_predicted"), self.server_tokens)
        self.prompt_tokens = _int(item.get("tokens_evaluated"), self.prompt_tokens) or 0
        timings = item.get("timings")
        if isinstance(timings, Mapping):
            evaluated = _int(timings.get("prompt_n"), None)
            cached = _int(timings.get("cache_n"), None)
            if cached is None and evaluated is not None and self.prompt_tokens:
                cached = max(0, self.prompt_tokens - evaluated)
            self.reused_tokens = cached or 0
            prompt_ms = timings.get("prompt_ms")
            if isinstance(prompt_ms, int | float):
                self.prefill_ms = float(prompt_ms)
        return piece, ("length" if item.get("stop_type") == "limit" else "eos")

    def result(self, reason: StopReason) -> Generation:
        total = (time.perf_counter() - self.started) * 1000
        return Generation(
            text=self.text,
            tokens=max(self.tokens, self.server_tokens or 0) if reason in ("length", "eos") else self.tokens,
            stop_reason=reason,
            prompt_tokens=self.prompt_tokens,
            reused_tokens=self.reused_tokens,
            # Without the server's own timings, time to first token stands for prefill (network included).
            prefill_ms=self.prefill_ms if self.prefill_ms is not None else (self.first_token_ms or total),
            first_token_ms=self.first_token_ms,
            total_ms=total,
            token_times_ms=self.times,
        )


def _token_probabilities(item: Any) -> list[tuple[str, float]]:
    """(token text, probability) of each token in a streamed chunk, where the server sent them: OpenAI's
    ``choices[0].logprobs`` (``tokens``, ``token_logprobs``), llama-server's ``completion_probabilities``
    (``token`` and ``logprob``; older servers: ``content`` and its entry in ``probs``)."""
    out: list[tuple[str, float]] = []
    if not isinstance(item, Mapping):
        return out
    choices = item.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], Mapping):
        logprobs = choices[0].get("logprobs")
        if isinstance(logprobs, Mapping):
            tokens, values = logprobs.get("tokens") or [], logprobs.get("token_logprobs") or []
            for token, value in zip(tokens, values, strict=False):
                if isinstance(value, int | float):
                    out.append((str(token), math.exp(value)))
        return out
    for entry in item.get("completion_probabilities") or []:
        if not isinstance(entry, Mapping):
            continue
        if isinstance(entry.get("logprob"), int | float):
            out.append((str(entry.get("token", "")), math.exp(entry["logprob"])))
            continue
        token = str(entry.get("content", ""))
        for candidate in entry.get("probs") or []:
            if isinstance(candidate, Mapping) and candidate.get("tok_str") == token:
                out.append((token, float(candidate.get("prob") or 0.0)))
                break
    return out


def _int(value: Any, default: int | None) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else default


def _never() -> bool:
    return False


class HttpBackend:
    """A remote model behind an OpenAI-compatible completions endpoint or llama.cpp's llama-server.

    The structured prompt is sent in the server's own terms: llama-server's ``/infill`` takes the code
    before and after the cursor (``input_prefix``, ``input_suffix``) and the project's files
    (``input_extra``) and applies the model's FIM format itself.  An OpenAI-compatible server gets the
    prompt rendered in the model's FIM format (``fim``: found with the server's own tokenizer, where it has
    a tokenize endpoint, as for a GGUF; else implied by the model's name).  Only a server whose tokenizer
    cannot be asked gets a ``suffix`` field: llama-cpp-python's server (0.3.36) puts token id 0 where the
    FIM tokens belong, so a suffix sent to it would corrupt the prompt of any model.
    """

    def __init__(
        self,
        settings: ModelSettings,
        *,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        read_timeout_s: float | None = None,
        retry_after_s: float = RETRY_AFTER_S,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if settings.backend not in ("openai", "llama-server"):
            raise BackendError(f"model.backend {settings.backend!r} is not a remote backend")
        endpoint = settings.endpoint.strip()
        if not endpoint:
            raise BackendError(
                f"model.endpoint is empty: give the base URL of the {settings.backend} server, "
                "e.g. http://127.0.0.1:8080"
            )
        try:
            url = httpx.URL(endpoint)
        except httpx.InvalidURL as e:
            raise BackendError(f"model.endpoint is not a URL: {e}") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise BackendError("model.endpoint must be an http:// or https:// URL with a host")
        self.kind = settings.backend
        # The base URL without credentials, query or a trailing /v1: paths are added per route.
        path = url.path.rstrip("/")
        if path.endswith("/v1"):
            path = path[: -len("/v1")]
        self._root = f"{url.scheme}://{url.netloc.decode('ascii')}{path}"
        self.endpoint = self._root  # safe to show: no user info, no query
        self._api_key_env = settings.api_key_env
        # The endpoint's password and query values are credentials too (never shown with the endpoint).
        self._url_secrets = tuple(
            v for v in (url.password, *(value for _, value in url.params.multi_items())) if v
        )
        self._configured_model = settings.remote_model
        self._remote_model = settings.remote_model  # or the name the server lists, once known
        self.model_id = display_model_id(settings.remote_model) if settings.remote_model else ""
        configured = getattr(settings, "timeout_ms", 0)
        self.read_timeout_s = read_timeout_s or (configured / 1000 if configured else READ_TIMEOUT_S)
        self.connect_timeout_s = connect_timeout_s
        self.retry_after_s = retry_after_s
        self._timeout = httpx.Timeout(
            connect=connect_timeout_s,
            read=self.read_timeout_s,
            write=self.read_timeout_s,
            pool=connect_timeout_s,
        )

        self._lock = threading.Lock()  # the small shared state below; never held across a request
        self._probe_lock = threading.Lock()
        self._knows_model = False
        self._knows_tokenizer = False
        self._tokenize_route: _TokenizeRoute | None = None
        self._added_tokens = 0  # BOS and friends that the server's tokenizer adds to every text
        self._tokenizer_pause_until = 0.0
        self._counts: OrderedDict[str, int] = OrderedDict()
        self._down_until = 0.0
        self._down_message = ""
        self._infill = self.kind == "llama-server"  # until the server says the model cannot infill (501)
        self._template: FimTemplate | None = None
        self._template_known = False
        self._no_logprobs = False  # the server refused to return token probabilities
        self._streams = 0

        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="opportune-http", daemon=True)
        self._thread.start()
        self._client = httpx.AsyncClient(
            timeout=self._timeout,
            transport=transport,
            # Credentials in the URL become basic auth (kept by httpx, never shown with the endpoint).
            auth=httpx.BasicAuth(url.username, url.password) if url.userinfo else None,
            limits=httpx.Limits(max_keepalive_connections=4, keepalive_expiry=30.0),
        )
        self._closed = False
        self._bad_answers = 0
        # Learn the model's name and tokenizer now (the engine builds the backend off the event loop); an
        # unreachable or wrong server is not an error yet: the first completion reports it, and the backend
        # must exist to recover when the server is fixed.
        try:
            self._ensure_probed()
        except Exception as e:
            log.info("probing %s failed (%s); asking again later", self.endpoint, self._redact(str(e)))
        log.info("remote %s model %s at %s", self.kind, self.model_id or "(unnamed)", self.endpoint)

    # ---- the Backend protocol ------------------------------------------------------------------------

    @property
    def fim(self) -> FimTemplate | None:
        """The FIM format rendered into an OpenAI-compatible prompt (None: llama-server, or no FIM)."""
        if self.kind != "openai":
            return None
        return self._template or template_for_name(self._remote_model)

    @property
    def takes_suffix(self) -> bool:
        if self.kind == "llama-server":
            return self._infill
        return self.fim is not None or self._sends_suffix_field

    @property
    def _sends_suffix_field(self) -> bool:
        # A tokenizer that can be asked and showed no FIM tokens: the model cannot use a suffix.
        return self._tokenize_route is None and self.fim is None

    def generate(self, request: GenerationRequest) -> Generation:
        started = time.perf_counter()
        if request.cancelled():
            raise Cancelled
        self._check_up()
        self._ensure_model()
        self._check_up()  # the probe may have found the server answering garbage
        self._ensure_template()
        for _ in range(3):  # another round only after a refusal of /infill or of logprobs
            route, payload = self._payload(request, request.max_tokens, stream=True)
            template = self.fim
            collector = _Collector(request, started, template.stops if template else ())
            with self._lock:
                self._streams += 1
            try:
                outcome = self._exchange(
                    "POST", route, payload, stream=True, cancelled=request.cancelled, on_item=collector.feed
                )
            except _HttpStatus as e:
                if route == "/infill" and e.status == 501 and collector.tokens == 0:
                    self._no_infill(e)
                    continue
                if "logprobs" in payload and collector.tokens == 0 and e.status in (400, 422, 500, 501):
                    # llama_cpp.server refuses logprobs unless started with logits_all: ask without.
                    log.info("%s gives no token probabilities (%s)", self.endpoint, e.detail)
                    self._no_logprobs = True
                    continue
                raise self._status_error(route, e) from None
            except _BadAnswer as e:
                failure = self._bad_answer_error(route, e)
                self._mark_down(failure, bad_answer=True)
                raise failure from None
            except httpx.HTTPError as e:
                partial = self._partial_after(e, collector)
                if partial is not None:
                    return partial
                raise self._network_error(route, e) from None
            finally:
                with self._lock:
                    self._streams -= 1
            if outcome == "cancelled" and collector.tokens == 0:
                raise Cancelled
            if outcome is not None:
                return collector.result(outcome)
            reason = collector.reason or ("length" if collector.tokens >= request.max_tokens else "eos")
            return collector.result(reason)
        raise BackendError(f"{self.endpoint} refused the request")  # pragma: no cover - the loop returns

    def prewarm(self, prompt: Prompt | str, cancelled: Callable[[], bool]) -> int:
        """llama-server: evaluate the prompt into its cache with ``n_predict`` 0; other servers: nothing."""
        if self.kind != "llama-server":
            return 0
        if cancelled():
            raise Cancelled
        if self._is_down():
            return 0
        self._ensure_model()
        request = GenerationRequest(prompt=prompt, max_tokens=0, cancelled=cancelled)
        for _ in range(2):
            route, payload = self._payload(request, 0, stream=False)
            answers: list[Any] = []
            try:
                outcome = self._exchange(
                    "POST", route, payload, stream=False, cancelled=cancelled, on_item=answers.append
                )
            except _HttpStatus as e:
                if route == "/infill" and e.status == 501:
                    self._no_infill(e)
                    continue
                log.warning("prewarm refused: %s", self._status_error(route, e))
                return 0
            except httpx.HTTPError as e:
                log.debug("prewarm failed: %s", self._network_error(route, e))
                return 0
            except _BadAnswer as e:
                log.debug("prewarm failed: %s", self._bad_answer_error(route, e))
                return 0
            if outcome == "cancelled":
                raise Cancelled
            answer = answers[0] if answers and isinstance(answers[0], Mapping) else {}
            timings = answer.get("timings")
            evaluated = _int(timings.get("prompt_n"), None) if isinstance(timings, Mapping) else None
            if evaluated is None:
                evaluated = _int(answer.get("tokens_evaluated"), 0)
            return evaluated or 0
        return 0

    def count_tokens(self, text: str) -> int:
        """The server's own count where it has a tokenize endpoint; else about four characters a token."""
        if not text:
            return 0
        with self._lock:
            cached = self._counts.get(text)
            if cached is not None:
                self._counts.move_to_end(text)
                return cached
            # While our own generation streams, the caller is the engine's event loop (telemetry), which
            # must not wait on a round trip; and llama_cpp.server would end the stream to serve it.
            busy = self._streams > 0
        if busy:
            return approximate_tokens(text)
        ids = self._remote_tokens(text, patient=False)
        if ids is None:
            return approximate_tokens(text)
        count = max(0, len(ids) - self._added_tokens)
        with self._lock:
            self._counts[text] = count
            if len(self._counts) > TOKEN_COUNT_CACHE:
                self._counts.popitem(last=False)
        return count

    def tokenize(self, text: str) -> list[int]:
        """The server's token ids (with the tokens it adds, like llama.cpp's BOS); a BackendError if it has
        no tokenize endpoint, since ids cannot be approximated."""
        self._check_up()
        ids = self._remote_tokens(text, patient=True)
        if ids is None:
            self._check_up()
            raise BackendError(f"the {self.kind} server at {self.endpoint} has no tokenize endpoint")
        return ids

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            asyncio.run_coroutine_threadsafe(self._client.aclose(), self._loop).result(timeout=2)
            asyncio.run_coroutine_threadsafe(self._loop.shutdown_asyncgens(), self._loop).result(timeout=2)
        except Exception:
            log.debug("closing the HTTP client failed", exc_info=True)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=2)
        if not self._thread.is_alive():
            self._loop.close()

    # ---- requests ------------------------------------------------------------------------------------

    def _payload(
        self, request: GenerationRequest, n_predict: int, *, stream: bool
    ) -> tuple[str, dict[str, Any]]:
        prompt: Prompt = as_prompt(request.prompt)
        if self.kind == "llama-server":
            body: dict[str, Any] = {
                "n_predict": n_predict,
                "temperature": request.temperature,
                "stream": stream,
                "cache_prompt": True,  # keep the evaluated prompt: the next keystroke shares most of it
                # After the first token, stop at the first line end past this budget (a FIM setting).
                "t_max_predict_ms": int(self.read_timeout_s * 1000),
            }
            if request.stops:
                body["stop"] = list(request.stops)
            if self._configured_model:  # llama-server serves one model (or routes by a name it was given)
                body["model"] = self._configured_model
            if request.on_confidence is not None:
                body["n_probs"] = 1  # the sampled token's probability with each token (a confidence cut)
            if self._infill:
                body["input_prefix"] = prompt.local_prefix
                body["input_suffix"] = prompt.suffix
                body["input_extra"] = [{"filename": name, "text": text} for name, text in prompt.project]
                body["prompt"] = ""
                return "/infill", body
            body["prompt"] = prompt.prefix
            return "/completion", body
        template = self.fim
        stops = list(request.stops) + list(template.stops if template else ())
        body = {
            "prompt": render(prompt, template) if template else prompt.prefix,
            "max_tokens": n_predict,
            "temperature": request.temperature,
            "stream": stream,
        }
        if prompt.suffix and self._sends_suffix_field:
            body["suffix"] = prompt.suffix
        if stops:
            body["stop"] = stops[:4]  # the OpenAI API takes at most four; the rest are cut locally
        if request.on_confidence is not None and not self._no_logprobs:
            body["logprobs"] = 1  # each token's log-probability (a confidence cut)
        model = self._remote_model
        if model:
            body["model"] = model
        return "/v1/completions", body

    def _exchange(
        self,
        method: str,
        route: str,
        payload: Mapping[str, Any] | None,
        *,
        stream: bool,
        cancelled: Callable[[], bool],
        on_item: Callable[[Any], StopReason | None],
        timeout: httpx.Timeout | None = None,
    ) -> StopReason | None:
        """Run one request on the loop thread and hand its decoded JSON items to ``on_item`` on this one.

        Returns None when the response ended by itself, "cancelled" when ``cancelled()`` turned true, or the
        reason ``on_item`` returned to close the stream early.  Raises the request's httpx error or
        ``_HttpStatus``.  A connection error marks the endpoint down; any answer marks it up again.
        """
        if self._closed:
            raise BackendError("the remote backend was closed")
        out: queue.SimpleQueue[Any] = queue.SimpleQueue()
        future = asyncio.run_coroutine_threadsafe(
            self._pump(method, self._root + route, payload, out, stream, timeout or self._timeout), self._loop
        )
        # Queued after every item the coroutine put, also when the task is cancelled before it starts.
        future.add_done_callback(lambda _f: out.put(_END))
        outcome: StopReason | None = None
        answered = False
        try:
            while True:
                try:
                    item = out.get(timeout=POLL_S)
                except queue.Empty:
                    if cancelled() or self._closed:
                        outcome = "cancelled"
                        break
                    continue
                if item is _END:
                    break
                answered = True
                outcome = on_item(item)
                if outcome is not None:
                    break
        finally:
            # Cancelling the task closes the response and its connection: the server stops generating.
            future.cancel()
        error = None if outcome is not None or future.cancelled() else future.exception(timeout=0)
        if isinstance(error, httpx.TransportError) and _is_connection_error(error) and not answered:
            self._mark_down(self._network_error(route, error))
        elif isinstance(error, _BadAnswer):
            pass  # reachable but wrong: the caller decides (a probe of an optional route is no outage)
        elif answered or error is None or isinstance(error, _HttpStatus):
            self._mark_up()
        if error is not None:
            raise error
        return outcome

    async def _pump(
        self,
        method: str,
        url: str,
        payload: Mapping[str, Any] | None,
        out: queue.SimpleQueue[Any],
        stream: bool,
        timeout: httpx.Timeout,
    ) -> None:
        """On the loop: send the request (retrying connection errors within budget), queue what it answers."""
        started = time.monotonic()
        attempt = 0
        while True:
            answered = False
            try:
                async with self._client.stream(
                    method, url, json=payload, headers=self._headers(stream), timeout=timeout
                ) as response:
                    answered = True
                    if response.status_code >= 400:
                        await response.aread()
                        raise _HttpStatus(response.status_code, _error_detail(response, self._redact))
                    await _queue_answer(response, out, stream)
                return
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError):
                # Retry only before the server answered (a refused or stale connection): a retry after
                # tokens arrived would repeat them.  And only while the connect budget lasts.
                delay = RETRY_BACKOFF_S * 2**attempt
                budget = max(self.connect_timeout_s, 2 * RETRY_BACKOFF_S * (2**RETRIES))
                if answered or attempt >= RETRIES or time.monotonic() - started + delay > budget:
                    raise
                attempt += 1
                await asyncio.sleep(delay)

    def _headers(self, stream: bool) -> dict[str, str]:
        headers = {"Accept": "text/event-stream" if stream else "application/json"}
        key = self._api_key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _api_key(self) -> str:
        return os.environ.get(self._api_key_env, "").strip() if self._api_key_env else ""

    def _redact(self, text: str) -> str:
        """Servers sometimes echo a rejected key; never let it reach a message, a log or telemetry.  Called
        on whole texts, before anything is cut to length: a key split by a cut would escape the mask."""
        for secret in (self._api_key(), *self._url_secrets):
            if secret and len(secret) >= 4:
                text = text.replace(secret, "***")
        return text

    # ---- discovery and tokenization --------------------------------------------------------------------

    def _ensure_probed(self) -> None:
        """Learn the served model's name and the tokenize endpoint (at start, and after the server was down)."""
        self._ensure_model()
        self._ensure_tokenizer(wait=True)
        self._ensure_template()

    def _ensure_template(self) -> None:
        """Which FIM format the served model speaks, asked of its own tokenizer the way a GGUF's vocabulary
        is (templates.detect_template): each family's special tokens must be single tokens."""
        if self.kind != "openai" or self._template_known or self._tokenize_route is None:
            return
        added = self._added_tokens

        def has_token(text: str) -> bool:
            ids = self._remote_tokens(text, patient=True)
            if ids is None:
                raise _Unanswered
            return len(ids) - added == 1

        try:
            self._template = detect_template({"general.name": self._remote_model}, has_token)
        except _Unanswered:
            return  # asked again on the next request
        self._template_known = True
        if self._template is not None:
            log.info("remote model speaks the %s FIM format", self._template.family)

    def _probe_timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self.connect_timeout_s, read=min(PROBE_TIMEOUT_S, self.read_timeout_s))

    def _ensure_model(self) -> None:
        """The name the server lists its model by: sent back in requests, shown (cleaned) in telemetry."""
        if self._knows_model or self._is_down():
            return
        with self._probe_lock:
            if self._knows_model:
                return
            try:
                answer = self._json("GET", "/v1/models", None, self._probe_timeout())
            except _HttpStatus:
                answer = {}  # not every server lists its models; the name stays as configured
            except _BadAnswer as e:
                # One message (at the first completion), then tried again after a growing pause.
                failure = self._bad_answer_error("/v1/models", e)
                log.info("%s", failure)
                self._mark_down(failure, bad_answer=True)
                return
            except httpx.HTTPError as e:
                log.info("%s", self._network_error("/v1/models", e, self._probe_timeout().read))
                return  # asked again on the next call
            data = answer.get("data") if isinstance(answer, Mapping) else None
            if isinstance(data, list) and data and isinstance(data[0], Mapping) and data[0].get("id"):
                self._remote_model = self._configured_model or str(data[0]["id"])
                self.model_id = display_model_id(self._remote_model)
            self._knows_model = True

    def _ensure_tokenizer(self, *, wait: bool) -> None:
        """Find the server's tokenize endpoint, if it has one; without ``wait``, leave it to a running probe."""
        if self._knows_tokenizer or self._is_down() or time.monotonic() < self._tokenizer_pause_until:
            return
        if not self._probe_lock.acquire(blocking=wait):
            return
        try:
            if self._knows_tokenizer:
                return
            routes = (_LLAMA_SERVER_TOKENIZE,) if self.kind == "llama-server" else _OPENAI_TOKENIZE
            for route in routes:
                try:
                    # What the tokenizer adds to an empty text (a BOS) is not part of any text's count.
                    empty = self._json(
                        "POST", route.path, route.body("", self._remote_model), self._probe_timeout()
                    )
                    added = len(route.ids(empty))
                except (_HttpStatus, _BadAnswer, ValueError, TypeError, KeyError):
                    continue  # not this server family
                except httpx.HTTPError as e:
                    # Down, or busy (llama_cpp.server tokenizes only between generations): ask again later.
                    self._tokenizer_pause_until = time.monotonic() + TOKENIZER_PAUSE_S
                    log.debug(
                        "tokenize probe: %s", self._network_error(route.path, e, self._probe_timeout().read)
                    )
                    return
                self._tokenize_route, self._added_tokens = route, added
                break
            else:
                self._tokenize_route = None
                log.info("%s has no tokenize endpoint: token counts are approximated", self.endpoint)
            self._knows_tokenizer = True
        finally:
            self._probe_lock.release()

    def _remote_tokens(self, text: str, *, patient: bool) -> list[int] | None:
        """The server's ids for ``text``, or None when it cannot say now.  Impatient callers (token counts
        for prompt assembly, many per keystroke) never wait on a busy server: after one timeout they get
        None for ``TOKENIZER_PAUSE_S``."""
        if self._is_down() or (not patient and time.monotonic() < self._tokenizer_pause_until):
            return None
        self._ensure_tokenizer(wait=patient)
        route = self._tokenize_route
        if route is None:
            return None
        read_s = self.read_timeout_s if patient else min(TOKENIZE_TIMEOUT_S, self.read_timeout_s)
        try:
            answer = self._json(
                "POST",
                route.path,
                route.body(text, self._remote_model),
                httpx.Timeout(self.connect_timeout_s, read=read_s),
            )
            return route.ids(answer)
        except httpx.TimeoutException:
            self._tokenizer_pause_until = time.monotonic() + TOKENIZER_PAUSE_S
            log.debug("remote tokenize timed out; approximating for %g s", TOKENIZER_PAUSE_S)
        except (_HttpStatus, _BadAnswer, httpx.HTTPError, ValueError, TypeError, KeyError) as e:
            log.debug("remote tokenize failed (%s); approximating", type(e).__name__)
        return None

    def _json(
        self, method: str, route: str, payload: Mapping[str, Any] | None, timeout: httpx.Timeout
    ) -> Any:
        answers: list[Any] = []
        self._exchange(
            method, route, payload, stream=False, cancelled=_never, on_item=answers.append, timeout=timeout
        )
        return answers[0] if answers else {}

    # ---- failures and recovery -------------------------------------------------------------------------

    def _no_infill(self, error: _HttpStatus) -> None:
        log.info("llama-server cannot infill with this model (%s); using /completion", error.detail)
        self._infill = False

    def _is_down(self) -> bool:
        with self._lock:
            return time.monotonic() < self._down_until

    def _check_up(self) -> None:
        with self._lock:
            if time.monotonic() < self._down_until:
                raise BackendError(self._down_message)

    def _mark_down(self, error: BackendError, *, bad_answer: bool = False) -> None:
        with self._lock:
            pause = self.retry_after_s
            if bad_answer:
                pause *= min(BAD_ANSWER_BACKOFF_MAX, 2**self._bad_answers)
                self._bad_answers += 1
            self._down_until = time.monotonic() + pause
            self._down_message = str(error)
            # The server that comes back may be another one (another model, another tokenizer).
            self._knows_model = self._knows_tokenizer = False
            self._counts.clear()

    def _mark_up(self) -> None:
        with self._lock:
            if self._down_message:
                log.info("the %s server at %s is reachable again", self.kind, self.endpoint)
            self._down_until = 0.0
            self._down_message = ""
            self._bad_answers = 0

    def _bad_answer_error(self, route: str, error: _BadAnswer) -> BackendError:
        where = f"the {self.kind} server at {self.endpoint}"
        return BackendError(
            self._redact(f"{where} answered {route} with {error.detail}: check model.endpoint (a proxy?)")
        )

    def _network_error(self, route: str, error: httpx.HTTPError, read_s: float | None = None) -> BackendError:
        where = f"the {self.kind} server at {self.endpoint}"
        if isinstance(error, httpx.ConnectTimeout):
            why = f"cannot reach {where}: no answer to connect within {self.connect_timeout_s:g} s"
        elif isinstance(error, httpx.ConnectError):
            why = f"cannot reach {where} ({_reason(error)})"
        elif isinstance(error, httpx.TimeoutException):
            why = f"{where} did not answer {route} within {read_s or self.read_timeout_s:g} s"
        elif isinstance(error, httpx.RemoteProtocolError | httpx.ReadError):
            why = f"{where} closed the connection during {route}"
        else:
            why = f"request to {where} failed ({type(error).__name__})"
        return BackendError(self._redact(why))

    def _status_error(self, route: str, error: _HttpStatus) -> BackendError:
        where = f"the {self.kind} server at {self.endpoint}"
        if error.status in (401, 403):
            hint = f"set ${self._api_key_env}" if self._api_key_env else "set model.api_key_env"
            why = f"{where} refused the API key (HTTP {error.status}): {hint}"
        elif error.status == 404:
            why = f"{where} has no {route} (HTTP 404): check model.endpoint and model.backend"
        else:
            why = f"{where} answered HTTP {error.status} to {route}: {error.detail}"
        return BackendError(self._redact(why))

    def _partial_after(self, error: httpx.HTTPError, collector: _Collector) -> Generation | None:
        """A stream that broke or stalled after some tokens still gave usable text; before any, nothing."""
        if not collector.text:
            return None
        if isinstance(error, httpx.TimeoutException):
            return collector.result("deadline")
        log.info("%s", self._network_error("a stream", error))
        return collector.result("error")


async def _queue_answer(response: httpx.Response, out: queue.SimpleQueue[Any], stream: bool) -> None:
    """Queue each server-sent event's JSON as it arrives, or the one JSON answer of a plain response."""
    if not (stream and "text/event-stream" in response.headers.get("content-type", "")):
        # Not streamed (prewarm, tokenize), or a server that ignored ``stream``: one answer.
        await response.aread()
        try:
            answer = response.json() if response.content else {}
        except ValueError:
            kind = response.headers.get("content-type", "").split(";")[0].strip() or "no content type"
            raise _BadAnswer(f"HTTP {response.status_code} {kind} that is not JSON") from None
        out.put(answer)
        return
    # aclosing: leaving at [DONE] must not leave the generator to a finalizer on a stopped loop.
    async with contextlib.aclosing(EventSource(response).aiter_sse()) as events:
        async for event in events:
            if event.data == "[DONE]":
                return
            if not event.data.strip():
                continue
            try:
                out.put(json.loads(event.data))
            except ValueError:
                log.debug("skipped a server-sent event that is not JSON")


def _is_connection_error(error: httpx.TransportError) -> bool:
    return isinstance(error, httpx.ConnectError | httpx.ConnectTimeout | httpx.RemoteProtocolError)


def _reason(error: BaseException) -> str:
    """Why a connection failed, in words: the OS error at the bottom of httpx's exception chain."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError):
            return "connection refused"
        if isinstance(seen, socket.gaierror):
            return "unknown host"
        if isinstance(seen, OSError) and seen.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
            return "host unreachable"
        seen = seen.__cause__ or seen.__context__
    return str(error) or type(error).__name__


def _error_detail(response: httpx.Response, redact: Callable[[str], str]) -> str:
    """The server's own explanation, short: OpenAI {"error": {"message"}}, FastAPI {"detail"}, or text.
    Secrets are masked in the whole text first, then it is cut (the other order leaked part of a key)."""
    try:
        body = response.json()
    except ValueError:
        return _cut(redact(response.text.strip())) or response.reason_phrase
    if isinstance(body, Mapping):
        err = body.get("error")
        if isinstance(err, Mapping) and err.get("message"):
            return _cut(redact(str(err["message"])))
        if isinstance(err, str):
            return _cut(redact(err))
        if body.get("detail"):
            return _cut(redact(str(body["detail"])))
    return _cut(redact(json.dumps(body)))


def _cut(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
