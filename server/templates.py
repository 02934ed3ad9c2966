"""Fill-in-the-middle templates: the families' formats, which one a model speaks, and rendering a prompt
value into it.

A model gets a FIM prompt only when its vocabulary really has the family's special tokens (or, behind a
remote endpoint, when its name says the family); anything else (the embedded Gemma 3 270M among them) is
prompted with the code before the cursor alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from opportune.server.prompt import Prompt


@dataclass(frozen=True)
class FimTemplate:
    """A fill-in-the-middle prompt format, detected from the model's tokenizer."""

    family: str
    prefix: str
    suffix: str
    middle: str
    stops: tuple[str, ...] = ()
    file_separator: str = ""

    def render(self, before: str, after: str) -> str:
        return f"{self.prefix}{before}{self.suffix}{after}{self.middle}"


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


# Remote models are known only by the name the server gives them; these substrings name a FIM family.
_BY_NAME: tuple[tuple[str, FimTemplate], ...] = (
    ("codegemma", CODEGEMMA),
    ("qwen2.5-coder", QWEN),
    ("qwen2.5coder", QWEN),
    ("qwen3-coder", QWEN),
    ("starcoder", STARCODER),
    ("codellama", CODELLAMA),
    ("code-llama", CODELLAMA),
    ("deepseek-coder", DEEPSEEK),
)


def template_for_name(name: str) -> FimTemplate | None:
    """The FIM template a remote model's name implies, or None when the name does not say."""
    lowered = name.lower().replace(" ", "-").replace("_", "-")
    return next((t for key, t in _BY_NAME if key in lowered), None)


def render(prompt: Prompt, template: FimTemplate | None) -> str:
    """The prompt as one text for a model that takes text: in ``template``'s FIM format, or (None) the
    code before the cursor alone with the project context as comment-labelled files in front of it.

    A family with a file separator (Qwen, StarCoder, CodeGemma) was trained on repositories as files
    separated by it, so the project's files go before the FIM prefix in that form; others get them as
    commented text inside the prefix.  Either way they come first, where they stay put while typing.
    """
    if template is None:
        return prompt.prefix
    if template.file_separator and prompt.project:
        files = "".join(
            f"{template.file_separator}{path}\n{text.rstrip()}\n" for path, text in prompt.project
        )
        here = f"{template.file_separator}{prompt.path}\n" if prompt.path else template.file_separator
        return files + here + template.render(prompt.code_prefix, prompt.suffix)
    return template.render(prompt.prefix, prompt.suffix)
