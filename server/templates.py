"""Fill-in-the-middle templates, chosen from a GGUF's metadata and tokenizer.

A model gets a FIM prompt only when its vocabulary really has the family's special tokens; anything else
(the embedded Gemma 3 270M among them) is prompted with the code before the cursor alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from opportune.server.backends.base import FimTemplate

QWEN = FimTemplate(
    "qwen2.5-coder", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>",
    ("<|endoftext|>", "<|fim_pad|>", "<|file_sep|>", "<|repo_name|>", "<|im_end|>"), "<|file_sep|>",
)  # fmt: skip
CODEGEMMA = FimTemplate(
    "codegemma", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>",
    ("<|file_separator|>", "<eos>", "<end_of_turn>"), "<|file_separator|>",
)  # fmt: skip
STARCODER = FimTemplate(
    "starcoder", "<fim_prefix>", "<fim_suffix>", "<fim_middle>",
    ("<|endoftext|>", "<file_sep>", "<fim_prefix>"), "<file_sep>",
)  # fmt: skip
CODELLAMA = FimTemplate("codellama", "<PRE> ", " <SUF>", " <MID>", ("<EOT>", "</s>"))
DEEPSEEK = FimTemplate(
    "deepseek-coder",
    "<｜fim▁begin｜>",
    "<｜fim▁hole｜>",
    "<｜fim▁end｜>",
    ("<｜end▁of▁sentence｜>", "<|EOT|>"),
)

# Order matters: CodeGemma and Qwen share token spellings and are told apart by architecture.
_BY_TOKENS: tuple[tuple[FimTemplate, tuple[str, ...]], ...] = (
    (DEEPSEEK, ("<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>")),
    (STARCODER, ("<fim_prefix>", "<fim_suffix>", "<fim_middle>")),
    (QWEN, ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>")),
    (CODELLAMA, ("▁<PRE>", "▁<SUF>", "▁<MID>")),
    (CODELLAMA, ("<PRE>", "<SUF>", "<MID>")),
)


def detect_template(metadata: Mapping[str, Any], has_token: Callable[[str], bool]) -> FimTemplate | None:
    """The FIM template for a model, or None for a prefix-only prompt.

    ``metadata`` are the GGUF key/values (strings as llama-cpp-python reports them); ``has_token`` says
    whether the vocabulary contains a token spelled exactly so (a special token, not several pieces).
    """
    arch = str(metadata.get("general.architecture", "")).lower()
    name = str(metadata.get("general.name", "")).lower()
    for template, tokens in _BY_TOKENS:
        if all(has_token(t) for t in tokens):
            if template is QWEN and ("gemma" in arch or "gemma" in name):
                return CODEGEMMA
            return template
    # Newer GGUFs name the FIM token ids directly even when their spelling is unusual.
    if "tokenizer.ggml.fim_pre_token_id" in metadata and "gemma" in arch:
        return CODEGEMMA
    return None
