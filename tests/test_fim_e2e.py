"""Fill-in-the-middle end to end, on a tiny GGUF written by the test (random weights, a llama architecture,
Qwen2.5-Coder's FIM tokens in its vocabulary): what the model sees carries the code before the cursor, the
code after it and the project's files, in the family's template.

Checked through the real llama-cpp-python backend (the tokens it evaluated, read back from the context) and
through a real ``python -m llama_cpp.server`` on 127.0.0.1 (the tokens handed to its model, by a tap
around ``Llama.generate``), with the remote backend finding the family from the server's tokenizer.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from tiny_gguf import SPECIAL_IDS, write_tiny_fim_model

from opportune.server.backends.base import GenerationRequest
from opportune.server.config import ModelSettings, resolve
from opportune.server.prompt import Prompt, PromptInput, build_prompt
from opportune.server.templates import QWEN

pytestmark = pytest.mark.e2e

SOURCE = "from util import PI\n\n\ndef area(r):\n    return \n\n\nprint(area(2))\n"
CURSOR = SOURCE.index("return ") + len("return ")
PROJECT = (("util.py", "PI = 3.14159\n"),)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny") / "tiny-fim.gguf"
    write_tiny_fim_model(path)
    return path


def structured_prompt(count: Callable[[str], int]) -> Prompt:
    data = PromptInput(SOURCE, CURSOR, "geo.py", "python", None, neighbours=PROJECT)
    return build_prompt(data, budget_tokens=400, count_tokens=count, suffix_lines=8)


def expected_text() -> str:
    return (
        "<|file_sep|>util.py\nPI = 3.14159\n"
        "<|file_sep|>geo.py\n"
        "<|fim_prefix|>from util import PI\n\n\ndef area(r):\n    return "
        "<|fim_suffix|>\n\n\nprint(area(2))\n"
        "<|fim_middle|>"
    )


def test_the_embedded_model_evaluates_prefix_suffix_and_project_in_its_fim_template(tiny_model: Path) -> None:
    from opportune.server.backends.llama import LlamaBackend

    backend = LlamaBackend(tiny_model, n_ctx=1024, threads=1)
    try:
        assert backend.fim == QWEN and backend.takes_suffix
        g = backend.generate(GenerationRequest(structured_prompt(backend.count_tokens), max_tokens=4))
        seen = list(backend.llm._input_ids[: g.prompt_tokens])
        assert backend.llm.detokenize(seen, special=True).decode() == expected_text()
        # The family's markers are single special tokens, not their spelling in pieces.
        assert seen.count(SPECIAL_IDS["<|fim_prefix|>"]) == 1 and seen.count(SPECIAL_IDS["<|file_sep|>"]) == 2
    finally:
        backend.close()


async def test_the_engine_shows_a_fim_model_the_code_after_the_cursor(tiny_model: Path) -> None:
    """Through the engine as an editor drives it: the document's own code after the cursor reaches the
    model between the family's suffix and middle tokens."""
    from opportune.server.backends.llama import LlamaBackend
    from opportune.server.completion import Effective, Engine
    from opportune.server.documents import Document

    settings, errors = resolve({"completion": {"prewarm": False, "deadlineMs": 5000}})
    assert errors == []
    backends: list[LlamaBackend] = []

    def factory(_s: object) -> LlamaBackend:
        backends.append(LlamaBackend(tiny_model, n_ctx=1024, threads=1))
        return backends[-1]

    engine = Engine(factory, Effective(settings))
    uri = "file:///w/geo.py"
    engine.open(uri, SOURCE, "python", 1)
    try:
        await engine.complete(uri, Document(uri, SOURCE).position_at(CURSOR), invoked=True)
        for _ in range(500):  # the generation goes on into the typeahead cache after the answer
            if not engine.worker.busy:
                break
            await asyncio.sleep(0.01)
        llm = backends[0].llm
        result = engine.worker.live.result if engine.worker.live else None
        assert result is not None
        seen = llm.detokenize(list(llm._input_ids[: result.prompt_tokens]), special=True).decode()
        before, rest = seen.split("<|fim_suffix|>")
        assert before.startswith("<|fim_prefix|>") and before.endswith("def area(r):\n    return ")
        assert rest == "\n\n\nprint(area(2))\n<|fim_middle|>"
    finally:
        engine.shutdown()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def tapped_server(model: Path, work: Path) -> Iterator[tuple[str, Path]]:
    """``python -m llama_cpp.server`` on 127.0.0.1 with the tap; yields its URL and the tap's file."""
    missing = [m for m in ("fastapi", "uvicorn", "sse_starlette", "starlette_context", "pydantic_settings")
               if importlib.util.find_spec(m) is None]  # fmt: skip
    if missing:
        pytest.skip(f"needs llama-cpp-python[server] (missing: {', '.join(missing)})")
    port = free_port()
    tap = work / "seen.jsonl"
    log = work / "server.log"
    tap_script = Path(__file__).with_name("llama_server_tap.py")
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable, str(tap_script), "--model", str(model), "--host", "127.0.0.1",
                "--port", str(port), "--n_ctx", "1024", "--n_threads", "1", "--n_threads_batch", "1",
            ],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "OPPORTUNE_TAP": str(tap)},
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                pytest.fail(f"llama_cpp.server exited ({process.returncode}):\n{log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/v1/models", timeout=1.0).status_code == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server not ready:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield url, tap
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


def test_llama_cpp_server_sees_prefix_suffix_and_project_in_the_fim_template(
    tiny_model: Path, tmp_path: Path
) -> None:
    from opportune.server.backends.http import HttpBackend

    with tapped_server(tiny_model, tmp_path) as (url, tap):
        remote = HttpBackend(ModelSettings(backend="openai", endpoint=url))
        try:
            # The served name (a file path) says nothing; the server's tokenizer has the Qwen FIM tokens.
            assert remote.fim == QWEN and remote.takes_suffix
            remote.generate(GenerationRequest(structured_prompt(remote.count_tokens), max_tokens=4))
        finally:
            remote.close()
        [seen] = [json.loads(line) for line in tap.read_text().splitlines()]
    assert seen["text"] == expected_text()
    assert seen["ids"].count(SPECIAL_IDS["<|fim_prefix|>"]) == 1
    assert seen["ids"].count(SPECIAL_IDS["<|file_sep|>"]) == 2
