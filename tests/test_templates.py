"""FIM template detection from GGUF metadata written and read back with the gguf package."""

from pathlib import Path

import gguf
import pytest

from opportune.server.templates import (
    CODEGEMMA,
    CODELLAMA,
    DEEPSEEK,
    QWEN,
    STARCODER,
    detect_template,
    template_for_name,
)


def _write_gguf(path: Path, arch: str, name: str, tokens: list[str]) -> None:
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(name)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _read(path: Path) -> tuple[dict[str, object], set[str]]:
    reader = gguf.GGUFReader(str(path))
    metadata: dict[str, object] = {}
    tokens: set[str] = set()
    for key, f in reader.fields.items():
        if key == "tokenizer.ggml.tokens":
            tokens = {bytes(f.parts[i]).decode() for i in f.data}
        elif key.startswith("general."):
            metadata[key] = f.contents()
    return metadata, tokens


BASE = ["a", "b", "<|endoftext|>"]


@pytest.mark.parametrize(
    ("arch", "name", "special", "expected"),
    [
        ("qwen2", "Qwen2.5 Coder 0.5B", ["<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"], QWEN),
        ("gemma", "CodeGemma 2B", ["<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"], CODEGEMMA),
        ("starcoder2", "StarCoder2 3B", ["<fim_prefix>", "<fim_suffix>", "<fim_middle>"], STARCODER),
        ("llama", "CodeLlama 7B", ["▁<PRE>", "▁<SUF>", "▁<MID>"], CODELLAMA),
        ("llama", "DeepSeek Coder 1.3B", ["<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"], DEEPSEEK),
        ("gemma3", "Gemma 3 270m", [], None),
    ],
)
def test_detects_family_from_gguf(
    tmp_path: Path, arch: str, name: str, special: list[str], expected: object
) -> None:
    path = tmp_path / "m.gguf"
    _write_gguf(path, arch, name, BASE + special)
    metadata, tokens = _read(path)
    assert metadata["general.architecture"] == arch
    assert detect_template(metadata, tokens.__contains__) == expected


def test_partial_token_set_is_not_fim() -> None:
    tokens = {"<fim_prefix>", "<fim_middle>"}  # no suffix token
    assert detect_template({"general.architecture": "starcoder"}, tokens.__contains__) is None


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Qwen/Qwen2.5-Coder-1.5B", QWEN),
        ("bigcode/starcoder2-3b", STARCODER),
        ("codellama/CodeLlama-7b-hf", CODELLAMA),
        ("deepseek-ai/deepseek-coder-1.3b-base", DEEPSEEK),
        ("google/codegemma-2b", CODEGEMMA),
        ("gpt-3.5-turbo-instruct", None),
        ("gemma-3-270m", None),
    ],
)
def test_a_remote_models_name_says_its_fim_family(name: str, expected: object) -> None:
    assert template_for_name(name) == expected


def test_render_places_cursor_between_prefix_and_suffix() -> None:
    assert QWEN.render("def f(", "):") == "<|fim_prefix|>def f(<|fim_suffix|>):<|fim_middle|>"
