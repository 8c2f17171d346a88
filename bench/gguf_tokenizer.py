"""A Hugging Face ``tokenizer.json`` made from a GGUF's own vocabulary, for load generators that count
tokens (inference-perf) without reaching the hub.

    python bench/gguf_tokenizer.py MODEL.gguf OUT_DIR      # writes OUT_DIR/tokenizer.json (+ config)

The GGUF holds what a byte-level BPE tokenizer needs: ``tokenizer.ggml.tokens``, ``.merges`` and the
special tokens' ids (SmolLM2's "gpt2" model). Only that model is supported; others are refused in one
line. The result is checked against llama.cpp's own tokenization (``check``): the same ids for the
same text, so lengths the load generator asks for are the lengths the servers see.

Runs under the project's Python (bench/cluster_vs_service.py writes the tokenizer before it starts
inference-perf under its own).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import gguf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from nodeagent.gguf.reader import open_gguf


def _field(reader: gguf.GGUFReader, key: str) -> Any:
    field = reader.fields.get(key)
    if field is None:
        return None
    if field.types and field.types[0] == gguf.GGUFValueType.ARRAY:
        if field.types[-1] == gguf.GGUFValueType.STRING:
            return [bytes(field.parts[i]).decode("utf-8", errors="replace") for i in field.data]
        return [field.parts[i].tolist()[0] for i in field.data]
    value = field.parts[field.data[0]]
    if field.types[0] == gguf.GGUFValueType.STRING:
        return bytes(value).decode("utf-8")
    return value.tolist()[0]


def _pre_tokenizer(pre: str | None) -> dict[str, Any]:
    """llama.cpp's pre-tokenizer for the GGUF's ``tokenizer.ggml.pre``, as the tokenizers library
    writes it: GPT-2's byte-level split, after single digits for SmolLM's ("smollm")."""
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    if pre == "smollm":
        return {
            "type": "Sequence",
            "pretokenizers": [{"type": "Digits", "individual_digits": True}, byte_level],
        }
    return byte_level


def tokenizer_json(model: Path) -> dict[str, Any]:
    kind = _field(open_gguf(model), "tokenizer.ggml.model")  # the fast reader: refusing costs no vocabulary
    if kind != "gpt2":
        raise ValueError(f"{model.name}: tokenizer model {kind!r}; only byte-level BPE ('gpt2') is supported")
    reader = gguf.GGUFReader(model)
    tokens: list[str] = _field(reader, "tokenizer.ggml.tokens")
    types: list[int] = _field(reader, "tokenizer.ggml.token_type") or [1] * len(tokens)
    merges: list[str] = _field(reader, "tokenizer.ggml.merges") or []
    specials = [
        {"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True}
        for i, (t, kind_) in enumerate(zip(tokens, types, strict=True)) if kind_ == 3  # control tokens
    ]  # fmt: skip
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": specials,
        "normalizer": None,
        "pre_tokenizer": _pre_tokenizer(_field(reader, "tokenizer.ggml.pre")),
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": {t: i for i, t in enumerate(tokens)},
            "merges": [m.split(" ", 1) for m in merges],
        },
    }


def write(model: Path, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.json").write_text(json.dumps(tokenizer_json(model), ensure_ascii=False))
    (out / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast"}))
    return out


def check(model: Path, out: Path, texts: list[str]) -> list[str]:
    """Texts whose ids differ between the written tokenizer and llama.cpp's (none when they agree)."""
    import llama_cpp
    from tokenizers import Tokenizer

    ours = Tokenizer.from_file(str(out / "tokenizer.json"))
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model_ = llama_cpp.llama_model_load_from_file(str(model).encode(), params)
    vocab = llama_cpp.llama_model_get_vocab(model_)

    def theirs(text: str) -> list[int]:
        data = text.encode()
        buffer = (llama_cpp.llama_token * (len(data) + 8))()
        n = llama_cpp.llama_tokenize(vocab, data, len(data), buffer, len(buffer), False, True)
        return list(buffer[:n])

    try:
        return [t for t in texts if ours.encode(t).ids != theirs(t)]
    finally:
        llama_cpp.llama_model_free(model_)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        print(write(Path(argv[0]), Path(argv[1])) / "tokenizer.json")
    except (OSError, ValueError) as exc:
        print(f"gguf_tokenizer: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
