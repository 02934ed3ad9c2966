"""What reading each generated token's probability costs on the embedded model, against the token itself.

Generates the same continuations twice per prompt (real code from Python's standard library), once plain and
once reading each token's probability from the logits llama.cpp computed to sample it
(``LlamaBackend._probability``: a pass over the 262k-entry vocabulary), and reports milliseconds per
token for both, the probability read alone, and the probabilities seen (how a confidence cut would fall).

    python bench/confidence_cost.py [--prompts 8] [--tokens 32]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import sysconfig
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from opportune.server.backends.base import GenerationRequest  # noqa: E402
from opportune.server.backends.llama import LlamaBackend  # noqa: E402
from opportune.server.models import default_model_path  # noqa: E402


def prompts(n: int) -> list[str]:
    text = (Path(sysconfig.get_paths()["stdlib"]) / "textwrap.py").read_text()
    lines = text.split("\n")
    step = max(1, len(lines) // (n + 1))
    return ["\n".join(lines[max(0, i - 30) : i]) + "\n" for i in range(step, step * (n + 1), step)][:n]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--tokens", type=int, default=32)
    args = p.parse_args()
    backend = LlamaBackend(default_model_path(progress=False), n_ctx=2048, threads=1)
    plain: list[float] = []
    reading: list[float] = []
    reads: list[float] = []
    probabilities: list[float] = []
    original = backend._probability

    def timed(ctx: object, token: int) -> float:
        t0 = time.perf_counter()
        value = original(ctx, token)
        reads.append((time.perf_counter() - t0) * 1000)
        return value

    backend._probability = timed  # type: ignore[method-assign]
    for prompt in prompts(args.prompts):
        for sink in (None, lambda _at, p: probabilities.append(p)):
            backend.generate(GenerationRequest(prompt, max_tokens=1))  # prompt in the KV cache for both
            g = backend.generate(GenerationRequest(prompt, max_tokens=args.tokens, on_confidence=sink))
            steps = [b - a for a, b in zip(g.token_times_ms, g.token_times_ms[1:], strict=False)]
            (plain if sink is None else reading).extend(steps)
    backend.close()
    ordered = sorted(probabilities)

    def share_below(t: float) -> float:
        return sum(p < t for p in probabilities) / max(1, len(probabilities))

    print(f"ms per token, plain:               median {statistics.median(plain):.2f}  (n={len(plain)})")
    print(f"ms per token, reading probability: median {statistics.median(reading):.2f}  (n={len(reading)})")
    print(
        f"probability read alone:            median {statistics.median(reads):.3f} ms, max {max(reads):.3f}"
    )
    print(f"probabilities: p10 {ordered[len(ordered) // 10]:.2f}  median {statistics.median(ordered):.2f}")
    print("share of tokens below: " + "  ".join(f"{t:g}: {share_below(t):.2f}" for t in (0.1, 0.2, 0.3, 0.5)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
