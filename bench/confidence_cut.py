"""Where to cut a suggestion by the model's confidence, measured without the clock: one generation per cursor
position (real code from Python's standard library, the embedded model, the engine's prompt), then every
threshold replayed on it, so the figures do not depend on how busy the machine is.

A simulated developer at each position (the start of a statement, after its indentation) types the true line: the suggestion shown is the generation's first
line cut before its first token below the threshold (``postprocess.confident_length`` + ``finish``);
they accept what matches up to a word boundary (``eval.typing.accept_length``); after a whole accept the
rest of the same generation is shown from the typeahead cache; an unsure token they type themselves if
the model had it right.  Per threshold: suggestions shown per position, acceptance (first line exactly
what comes next), characters accepted per position, and wrong suggestions (shown, nothing accepted).

Latency is not in these figures: a cut suggestion is also ready earlier (fewer tokens to wait for), which
the typing benchmark (``bench/latency.py --min-confidence``) measures on an idle machine.

    python bench/confidence_cut.py [--positions 40] [--thresholds 0,0.1,0.2,0.3,0.4,0.5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.latency import positions, source_files  # noqa: E402
from opportune.server.backends.base import GenerationRequest  # noqa: E402
from opportune.server.backends.llama import LlamaBackend  # noqa: E402
from opportune.server.context.syntax import SyntaxTree  # noqa: E402
from opportune.server.eval.typing import accept_length  # noqa: E402
from opportune.server.models import default_model_path  # noqa: E402
from opportune.server.postprocess import Shape, confident_length, finish  # noqa: E402
from opportune.server.prompt import LineTokenCounter, PromptInput, build_prompt  # noqa: E402


def replay(
    generated: str, confidence: list[tuple[int, float]], truth: str, shape: Shape, threshold: float
) -> tuple[int, int, int, int]:
    """(shown, exact, accepted chars, wrong) for one position at one threshold."""
    shown = exact = accepted = wrong = 0
    pos = 0
    starts = [at for at, _ in confidence] + [len(generated)]
    for _ in range(20):
        remaining = generated[pos:]
        cut = confident_length(generated, confidence, pos, threshold)
        text = finish(remaining[:cut] if cut is not None else remaining, shape, complete=cut is None)
        if not text:
            if cut is None:
                break
            # Unsure right here: nothing shown; the user types the token, and the cache goes on if it was right.
            end = next((s for s in starts if s > pos), len(generated))
            if not truth.startswith(generated[pos:end], pos) or end == pos:
                break
            pos = end
            continue
        shown += 1
        exact += truth.startswith(text.split("\n", 1)[0], pos)
        n = accept_length(text, truth[pos:])
        accepted += n
        wrong += n == 0
        if n < len(text):
            break
        pos += n
    return shown, exact, accepted, wrong


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--positions", type=int, default=40)
    p.add_argument("--files", type=int, default=5)
    p.add_argument("--tokens", type=int, default=24)
    p.add_argument("--thresholds", default="0,0.1,0.2,0.3,0.4,0.5")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    thresholds = [float(x) for x in args.thresholds.split(",")]
    backend = LlamaBackend(default_model_path(progress=False), n_ctx=2048, threads=1)
    counter = LineTokenCounter(backend.count_tokens)
    totals = {t: [0, 0, 0, 0] for t in thresholds}
    n = 0
    for name, text, word_end in positions(source_files(args.files), args.positions, args.seed):
        # At the start of the statement, after its indentation (as after Enter in an editor): a prompt
        # ending in a space after a word (the latency bench's positions) is one no tokenizer ends a word on.
        line_start = text.rfind("\n", 0, word_end) + 1
        line = text[line_start : text.find("\n", line_start)]
        cut = line_start + len(line) - len(line.lstrip())
        line_end = text.find("\n", cut)
        truth = text[cut:line_end]
        line_prefix = text[text.rfind("\n", 0, cut) + 1 : cut]
        tree = SyntaxTree("python", text.encode())
        data = PromptInput(text, cut, name, "python", tree.context_at(len(text[:cut].encode())))
        prompt = build_prompt(data, budget_tokens=512, count_tokens=counter)
        g = backend.generate(
            GenerationRequest(
                prompt,
                max_tokens=args.tokens,
                should_stop=lambda t: "\n" in t,
                on_confidence=lambda _a, _p: None,
            )
        )
        shape = Shape(False, 8, line_prefix, "")
        for t in thresholds:
            for i, v in enumerate(replay(g.text, g.confidence, truth, shape, t)):
                totals[t][i] += v
        n += 1
    backend.close()
    print(f"{n} positions, {args.tokens} tokens at most, single-line suggestions")
    print(f"{'threshold':>9} {'shown/pos':>9} {'acceptance':>10} {'chars/pos':>9} {'wrong/pos':>9}")
    for t, (shown, exact, accepted, wrong) in totals.items():
        acceptance = exact / shown if shown else float("nan")
        print(f"{t:9g} {shown / n:9.2f} {acceptance:10.2f} {accepted / n:9.2f} {wrong / n:9.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
