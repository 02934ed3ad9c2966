"""``python -m llama_cpp.server`` with a tap: every prompt the server hands its model is written, as token ids
and as text with the special tokens spelled out, to the JSON-lines file named by OPPORTUNE_TAP.

The server runs unchanged (its own argument parsing, app and model); the tap only wraps
``Llama.generate``, which receives the prompt's tokens exactly as they will be evaluated, so a test can
check what the model saw rather than what a client meant to send.

    OPPORTUNE_TAP=/tmp/seen.jsonl python tests/llama_server_tap.py --model m.gguf --host 127.0.0.1 --port 8000
"""

from __future__ import annotations

import json
import os
import runpy
from collections.abc import Iterator, Sequence
from typing import Any

from llama_cpp import Llama

_generate = Llama.generate


def _tapped(self: Llama, tokens: Sequence[int], *args: Any, **kwargs: Any) -> Iterator[int]:
    with open(os.environ["OPPORTUNE_TAP"], "a", encoding="utf-8") as out:
        text = self.detokenize(list(tokens), special=True).decode("utf-8", "replace")
        out.write(json.dumps({"ids": list(tokens), "text": text}) + "\n")
    return _generate(self, tokens, *args, **kwargs)


Llama.generate = _tapped  # type: ignore[method-assign,assignment]

if __name__ == "__main__":
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
