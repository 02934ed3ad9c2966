"""The embedded backend: a local GGUF through llama-cpp-python, with KV-prefix reuse and cooperative stops.

Prefill is done here in small chunks rather than inside ``Llama.generate`` so that a superseded request is
dropped between chunks instead of after a whole prompt; the tokens already evaluated stay in the KV cache
for the next request, whose prompt shares them.
"""

from __future__ import annotations

import codecs
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from opportune.server.backends.base import BackendError, Cancelled, Generation, GenerationRequest
from opportune.server.prompt import Prompt, as_prompt
from opportune.server.templates import FimTemplate, detect_template, render

log = logging.getLogger(__name__)

# Prompt tokens per llama_decode call, with a cancellation check between calls.  Each finished batch stays
# in the KV cache, so a request superseded mid-prompt still leaves its progress to the next keystroke's
# request.  Measured on the typing replay (bench/latency.py): 64-token batches gave a feedback rate of
# 0.67 where 256-token batches stopped midway by llama.cpp's abort callback gave 0.40 (an aborted batch
# is discarded whole); 64 costs 6-12% prefill throughput on a cold prompt.
PREFILL_CHUNK = 64


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class LlamaBackend:
    def __init__(self, path: Path, *, n_ctx: int = 2048, threads: int = 0) -> None:
        try:
            from llama_cpp import Llama
        except ImportError as e:  # pragma: no cover - a broken install
            raise BackendError("llama-cpp-python is not installed: pip install llama-cpp-python") from e
        # llama.cpp's worker threads spin while they wait for each other: on a 2-core laptop that is also
        # running an editor, two threads were measured up to 25x slower than one (see bench/).  Default to
        # half the cores.
        threads = threads or max(1, (os.cpu_count() or 2) // 2)
        try:
            with _quiet_stderr():
                self.llm = Llama(
                    model_path=str(path),
                    n_ctx=n_ctx,
                    n_threads=threads,
                    n_threads_batch=threads,
                    n_batch=256,
                    # verbose=False would make llama-cpp-python point fds 1 *and* 2 at /dev/null for the
                    # load; fd 1 is the LSP stream, so responses written meanwhile were lost.  Only stderr
                    # is silenced here (_quiet_stderr), and verbose is switched off after the load.
                    verbose=True,
                    swa_full=True,  # without it a sliding-window model cannot drop a KV suffix: no prefix reuse
                )
        except (ValueError, RuntimeError, OSError) as e:
            raise BackendError(
                f"could not load {path}: the file is truncated, corrupt or not a model this llama.cpp supports"
            ) from e
        self.llm.verbose = False
        self.model_id = str(self.llm.metadata.get("general.name") or path.stem).replace(" ", "-").lower()
        self.fim: FimTemplate | None = detect_template(self.llm.metadata, self._has_token)
        self.takes_suffix = self.fim is not None
        self._n_vocab = self.llm.n_vocab()
        self._lock = threading.Lock()  # one context, one user at a time
        log.info("loaded %s (%s prompt)", self.model_id, self.fim.family if self.fim else "prefix-only")

    def _has_token(self, text: str) -> bool:
        try:
            return len(self.llm.tokenize(text.encode(), add_bos=False, special=True)) == 1
        except RuntimeError:
            return False

    def tokenize(self, text: str) -> list[int]:
        return list(
            self.llm.tokenize(text.encode("utf-8", "replace"), add_bos=True, special=self.fim is not None)
        )

    def count_tokens(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode("utf-8", "replace"), add_bos=False, special=False))

    def _prefill(self, tokens: list[int], cancelled: Callable[[], bool]) -> int:
        """Evaluate ``tokens`` into the KV cache, reusing the longest cached prefix; returns tokens reused."""
        llm = self.llm
        cached = llm._input_ids.tolist()
        reused = common_prefix(cached, tokens)
        if reused == len(tokens) and llm.n_tokens == len(tokens) and not llm._requires_eval:
            return reused
        # The last prompt token must be evaluated again for fresh logits.
        start = min(reused, len(tokens) - 1)
        llm.n_tokens = start
        llm._requires_eval = True
        for i in range(start, len(tokens), PREFILL_CHUNK):
            if cancelled():
                raise Cancelled
            llm.eval(tokens[i : i + PREFILL_CHUNK])
        return start

    def render(self, prompt: Prompt | str) -> str:
        """The text this model is given: the GGUF's FIM template around prefix and suffix, or the prefix."""
        return render(as_prompt(prompt), self.fim)

    def prewarm(self, prompt: Prompt | str, cancelled: Callable[[], bool]) -> int:
        tokens = self.tokenize(self.render(prompt))
        with self._lock:
            return len(tokens) - self._prefill(tokens, cancelled)

    def generate(self, request: GenerationRequest) -> Generation:
        started = time.perf_counter()
        if request.cancelled():
            raise Cancelled
        tokens = self.tokenize(self.render(request.prompt))
        budget = self.llm.n_ctx() - request.max_tokens - 1
        if len(tokens) > budget:  # the engine keeps prompts in budget; this guards a misconfiguration
            tokens = tokens[:1] + tokens[len(tokens) - budget + 1 :]
        with self._lock:
            reused = self._prefill(tokens, request.cancelled)
            prefill_ms = (time.perf_counter() - started) * 1000
            return self._decode(request, tokens, reused, prefill_ms, started)

    def _decode(
        self, request: GenerationRequest, tokens: list[int], reused: int, prefill_ms: float, started: float
    ) -> Generation:
        llm = self.llm
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        text = ""
        out: list[int] = []
        first: float | None = None
        times: list[float] = []
        reason: Any = "length"
        confidence: list[tuple[int, float]] = []
        vocab = llm._model.vocab
        import llama_cpp

        temp = request.temperature
        stops = tuple(request.stops) + (self.fim.stops if self.fim else ())
        ctx = llm._ctx
        generator = llm.generate(
            tokens, temp=temp, top_k=1 if temp <= 0 else 40, repeat_penalty=1.0, reset=True
        )
        try:
            for token in generator:
                now = (time.perf_counter() - started) * 1000
                times.append(now)
                if first is None:
                    first = now
                if llama_cpp.llama_vocab_is_eog(vocab, token):
                    reason = "eos"
                    break
                if request.on_confidence is not None:
                    probability = self._probability(ctx, token)
                    confidence.append((len(text), probability))
                    request.on_confidence(len(text), probability)
                piece = llm.detokenize([token], prev_tokens=tokens + out)
                out.append(token)
                text += decoder.decode(piece)
                if stops and any(s in text for s in stops):
                    text = text[: min(text.index(s) for s in stops if s in text)]
                    reason = "eos"
                    break
                if request.on_text:
                    request.on_text(text, len(out))
                if request.should_stop(text):
                    reason = "stop"
                    break
                if request.cancelled():
                    reason = "cancelled"
                    break
                if len(out) >= request.max_tokens:
                    break
        finally:
            generator.close()
        return Generation(
            text=text,
            tokens=len(out),
            stop_reason=reason,
            prompt_tokens=len(tokens),
            reused_tokens=reused,
            prefill_ms=prefill_ms,
            first_token_ms=first,
            total_ms=(time.perf_counter() - started) * 1000,
            token_times_ms=times,
            confidence=confidence,
        )

    def _probability(self, ctx: Any, token: int) -> float:
        """The probability the model gave ``token``, from the logits llama.cpp computed to sample it.

        Only the last position's logits exist (no ``logits_all``); they are read in place through the C
        pointer, and softmax needs one pass over the vocabulary: p = 1 / sum(exp(logit - logit[token])).
        """
        logits = np.ctypeslib.as_array(ctx.get_logits_ith(-1), shape=(self._n_vocab,))
        top = float(logits[token])
        with np.errstate(over="ignore"):
            total = float(np.exp(logits - top).sum())
        return 1.0 / total if total > 0 else 0.0

    def close(self) -> None:
        with self._lock, contextlib.suppress(Exception), _quiet_stderr():
            self.llm.close()


@contextlib.contextmanager
def _quiet_stderr() -> Any:
    """llama.cpp prints its load log on fd 2 even with verbose=False; keep the editor's log readable."""
    try:
        fd = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(fd, 2)
        os.close(fd)
