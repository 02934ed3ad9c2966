"""A tiny GGUF written with the ``gguf`` package: a llama-architecture model with random weights and a
byte-level BPE vocabulary that has a fill-in-the-middle family's special tokens (Qwen2.5-Coder's spelling).

It answers nonsense, but llama.cpp loads it in milliseconds and tokenizes, evaluates and detokenizes like a
real model, so a test can see exactly which tokens a backend put in front of it.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

FIM_TOKENS = (
    "<|fim_prefix|>",
    "<|fim_suffix|>",
    "<|fim_middle|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
)
END = "<|endoftext|>"


def byte_tokens() -> list[str]:
    """GPT-2's byte-to-unicode table: one printable character per byte (space is 'Ġ', newline 'Ċ')."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = {b: chr(b) for b in printable}
    n = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + n)
            n += 1
    return [chars[b] for b in range(256)]


TOKENS = [*byte_tokens(), "ĠĠ", END, *FIM_TOKENS]
SPECIAL_IDS = {t: TOKENS.index(t) for t in (END, *FIM_TOKENS)}


def write_tiny_fim_model(path: Path, *, name: str = "tiny-fim", seed: int = 0) -> None:
    tokens = TOKENS
    n_vocab = len(tokens)
    types = [gguf.TokenType.NORMAL] * 257 + [gguf.TokenType.CONTROL] * (1 + len(FIM_TOKENS))
    ids = SPECIAL_IDS
    n_embd, n_head, n_ff, n_layer = 64, 4, 128, 1
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(name)
    w.add_context_length(2048)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(n_embd // n_head)
    w.add_vocab_size(n_vocab)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(["Ġ Ġ"])
    w.add_bos_token_id(ids[END])
    w.add_eos_token_id(ids[END])
    w.add_add_bos_token(False)
    w.add_uint32("tokenizer.ggml.fim_pre_token_id", ids["<|fim_prefix|>"])
    w.add_uint32("tokenizer.ggml.fim_suf_token_id", ids["<|fim_suffix|>"])
    w.add_uint32("tokenizer.ggml.fim_mid_token_id", ids["<|fim_middle|>"])
    w.add_uint32("tokenizer.ggml.fim_pad_token_id", ids["<|fim_pad|>"])
    w.add_uint32("tokenizer.ggml.fim_rep_token_id", ids["<|repo_name|>"])
    w.add_uint32("tokenizer.ggml.fim_sep_token_id", ids["<|file_sep|>"])
    rng = np.random.default_rng(seed)

    def tensor(tname: str, *shape: int) -> None:
        w.add_tensor(tname, (rng.standard_normal(shape) * 0.02).astype(np.float32))

    tensor("token_embd.weight", n_vocab, n_embd)
    w.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    tensor("output.weight", n_vocab, n_embd)
    for i in range(n_layer):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(n_embd, dtype=np.float32))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
        for part in ("q", "k", "v", "output"):
            tensor(f"blk.{i}.attn_{part}.weight", n_embd, n_embd)
        tensor(f"blk.{i}.ffn_gate.weight", n_ff, n_embd)
        tensor(f"blk.{i}.ffn_up.weight", n_ff, n_embd)
        tensor(f"blk.{i}.ffn_down.weight", n_embd, n_ff)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
