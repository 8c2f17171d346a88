"""The llama.cpp model, context and batch buffers behind the engine, on llama-cpp-python's low-level API.

Everything here is a thin, typed layer over ctypes calls. Only the batcher thread calls
``decode``/memory/adapter functions (llama.cpp contexts are not thread-safe); ``tokenize``
and ``piece`` read the vocabulary only and may be called from any thread, as llama-server
does from its HTTP threads.
"""

from __future__ import annotations

import ctypes
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np

from llamafleet.core.errors import EngineFailed, ModelFileInvalid
from nodeagent.gguf.header import read_header
from nodeagent.rpc.ggml import DeviceLayout, RemotePart, layout

log = logging.getLogger(__name__)

_GGML_LOG_WARN = 3
_POOLING = {"none": 0, "mean": 1, "cls": 2, "last": 3, "rank": 4}  # rank: a reranker's relevance score


@dataclass(frozen=True)
class NativeConfig:
    model_path: Path
    n_ctx_per_seq: int
    n_seq: int
    n_batch: int
    n_ubatch: int
    n_gpu_layers: int
    n_threads: int
    embeddings: bool
    pooling: str  # "auto" (the GGUF's, else mean), "mean", "cls", "last" or "rank" (a reranker)
    remote_parts: tuple[RemotePart, ...] = ()  # layer ranges on RPC workers; the rest stays here
    cpu_repack: bool = True  # llama.cpp's extra buffer types: weights repacked for this CPU's kernels


def _forward_log(level: int, text: bytes, _: Any) -> None:
    if level >= _GGML_LOG_WARN and text:
        log.log(
            logging.ERROR if level > _GGML_LOG_WARN else logging.WARNING,
            "llama.cpp: %s",
            text.decode(errors="replace").rstrip(),
        )


# Kept at module level: llama.cpp holds the pointer for the life of the process.
_LOG_CALLBACK = llama_cpp.llama_log_callback(_forward_log)

# Aborting a decode step: llama.cpp asks a C callback between graph nodes whether to stop. A Python
# callback would take the GIL at every node; instead the callback is libc's strlen on a two-byte
# buffer of ours ([flag, NUL]): it returns 1 when the flag byte is set and 0 when not, which is exactly
# the bool llama.cpp expects (the return register's low byte), read without Python.
_STRLEN = llama_cpp.ggml_abort_callback(ctypes.cast(ctypes.CDLL(None).strlen, ctypes.c_void_p).value or 0)
_NEVER = ctypes.create_string_buffer(2)  # a flag nobody sets: steps that must not be aborted


class LoadProgress:
    """Logs model-load progress in quarters, so a slow load on a big model shows it is moving."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._next = 0.25
        self.callback = llama_cpp.llama_progress_callback(self._on_progress)

    def _on_progress(self, progress: float, _: Any) -> bool:
        if progress >= self._next:
            log.info("loading %s: %d%%", self._name, int(progress * 100))
            while self._next <= progress:
                self._next += 0.25
        return True


class BatchBuffer:
    """A ``llama_batch`` whose arrays are numpy buffers, so filling a chunk is a few slice writes."""

    def __init__(self, capacity: int, n_seq: int) -> None:
        self.capacity = capacity
        self.n = 0
        self._token = np.zeros(capacity, np.int32)
        self._pos = np.zeros(capacity, np.int32)
        self._n_seq_id = np.ones(capacity, np.int32)
        self._seq_cells = np.arange(n_seq, dtype=np.int32)  # seq_id[i] points at one of these
        self._seq_ptr = np.zeros(capacity, np.uintp)
        self._logits = np.zeros(capacity, np.int8)
        i32p = ctypes.POINTER(ctypes.c_int32)
        self.struct = llama_cpp.llama_batch(
            n_tokens=0,
            token=self._token.ctypes.data_as(i32p),
            embd=None,
            pos=self._pos.ctypes.data_as(i32p),
            n_seq_id=self._n_seq_id.ctypes.data_as(i32p),
            seq_id=ctypes.cast(self._seq_ptr.ctypes.data, ctypes.POINTER(i32p)),
            logits=self._logits.ctypes.data_as(ctypes.POINTER(ctypes.c_int8)),
        )

    @property
    def room(self) -> int:
        return self.capacity - self.n

    def clear(self) -> None:
        self.n = 0

    def add(self, seq_id: int, tokens: list[int], start_pos: int, logits: str) -> int:
        """Append tokens of one sequence; ``logits`` is "last", "all" or "none". Returns the last index."""
        k = len(tokens)
        a, b = self.n, self.n + k
        self._token[a:b] = tokens
        self._pos[a:b] = np.arange(start_pos, start_pos + k, dtype=np.int32)
        self._seq_ptr[a:b] = self._seq_cells.ctypes.data + 4 * seq_id
        self._logits[a:b] = 1 if logits == "all" else 0
        if logits == "last":
            self._logits[b - 1] = 1
        self.n = b
        return b - 1


class NativeModel:
    """One loaded model with one context of ``n_seq`` sequences, each ``n_ctx_per_seq`` long."""

    def __init__(self, config: NativeConfig) -> None:
        llama_cpp.llama_log_set(_LOG_CALLBACK, None)
        llama_cpp.llama_backend_init()
        self.config = config
        progress = LoadProgress(config.model_path.name)
        mparams = llama_cpp.llama_model_default_params()
        mparams.n_gpu_layers = config.n_gpu_layers
        mparams.use_extra_bufts = config.cpu_repack
        self._layout: DeviceLayout | None = None  # kept alive as long as the model
        if config.remote_parts:
            n_layer = read_header(config.model_path).block_count
            # The head's own range goes to its GPU when the replica asks for GPU layers at all.
            self._layout = layout(list(config.remote_parts), n_layer, head_gpu=config.n_gpu_layers != 0)
            self._layout.apply(mparams)
            remote = ", ".join(f"{p.first}-{p.last} on {p.endpoint}" for p in config.remote_parts)
            log.info("layers %s; the rest of %d layers and the output here", remote, n_layer)
        mparams.progress_callback = progress.callback
        model = llama_cpp.llama_model_load_from_file(str(config.model_path).encode(), mparams)
        if not model:
            raise ModelFileInvalid(f"llama.cpp could not load {config.model_path} (see the log above)")
        self.model = model
        self.vocab = llama_cpp.llama_model_get_vocab(model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        self.n_embd = llama_cpp.llama_model_n_embd(model)
        self.n_cls_out = max(1, llama_cpp.llama_model_n_cls_out(model))  # a reranker's scores per input
        self.n_swa = llama_cpp.llama_model_n_swa(model)
        self.pooling = self._pooling_name(config.pooling)
        self.eog_tokens = [t for t in range(self.n_vocab) if llama_cpp.llama_vocab_is_eog(self.vocab, t)]

        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = config.n_ctx_per_seq * config.n_seq
        cparams.n_seq_max = config.n_seq
        cparams.n_batch = config.n_batch
        cparams.n_ubatch = config.n_ubatch
        cparams.kv_unified = False  # every slot owns n_ctx_per_seq cells: one long chat cannot starve others
        cparams.swa_full = False
        cparams.embeddings = False  # switched on only for embedding steps
        cparams.pooling_type = _POOLING[self.pooling] if config.embeddings else -1
        # Always explicit: llama.cpp's default (4) ignores the CPUs this process may use.
        cparams.n_threads = cparams.n_threads_batch = max(1, config.n_threads)
        ctx = llama_cpp.llama_init_from_model(model, cparams)
        if not ctx:
            llama_cpp.llama_model_free(model)
            raise EngineFailed(f"llama.cpp could not create a context of {cparams.n_ctx} tokens")
        self.ctx = ctx
        self.memory = llama_cpp.llama_get_memory(ctx)
        self.n_ctx_seq = llama_cpp.llama_n_ctx_seq(ctx)
        self.n_batch = llama_cpp.llama_n_batch(ctx)
        self.n_ubatch = llama_cpp.llama_n_ubatch(ctx)
        self.batch = BatchBuffer(self.n_batch, config.n_seq)
        self._embeddings_on = False
        self._abort_flag = ctypes.create_string_buffer(2)
        self._abortable = False
        llama_cpp.llama_set_abort_callback(ctx, _STRLEN, ctypes.cast(_NEVER, ctypes.c_void_p))

    # --- threads (batcher thread only) ---------------------------------------------------------

    @property
    def threads(self) -> int:
        return int(llama_cpp.llama_n_threads(self.ctx))

    def set_threads(self, n: int) -> None:
        """Take effect at the next decode: the agent shares the node's CPUs as its replicas change."""
        llama_cpp.llama_set_n_threads(self.ctx, n, n)

    # --- model facts -------------------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(65536)
        n = llama_cpp.llama_model_meta_val_str(self.model, key.encode(), buf, len(buf))
        return buf.value.decode(errors="replace") if n >= 0 else None

    def _pooling_name(self, wanted: str) -> str:
        if wanted != "auto":
            return wanted
        arch = self.meta("general.architecture") or ""
        from_gguf = self.meta(f"{arch}.pooling_type")
        names = {str(v): k for k, v in _POOLING.items()}
        name = names.get(from_gguf or "", "none")
        return "mean" if name == "none" else name

    def chat_template(self) -> str | None:
        raw = llama_cpp.llama_model_chat_template(self.model, None)
        return raw.decode(errors="replace") if raw else None

    def token_text(self, token: int) -> str:
        if token < 0:
            return ""
        return self.piece(token, special=True).decode(errors="replace")

    @property
    def bos(self) -> int:
        return int(llama_cpp.llama_vocab_bos(self.vocab))

    @property
    def eos(self) -> int:
        return int(llama_cpp.llama_vocab_eos(self.vocab))

    @property
    def sep(self) -> int:
        return int(llama_cpp.llama_vocab_sep(self.vocab))

    def adds(self, which: str) -> bool:
        """Whether the vocabulary adds its BOS/EOS/SEP token around an input (``which``: bos, eos, sep)."""
        return bool(getattr(llama_cpp, f"llama_vocab_get_add_{which}")(self.vocab))

    def rerank_template(self) -> str | None:
        """A reranker's own input layout (``tokenizer.chat_template.rerank``: {query}, {document})."""
        raw = llama_cpp.llama_model_chat_template(self.model, b"rerank")
        return raw.decode(errors="replace") if raw else None

    # --- tokens (thread-safe: vocabulary only) -----------------------------------------------

    def tokenize(self, text: str, add_special: bool) -> list[int]:
        raw = text.encode()
        capacity = len(raw) + 8
        buf = (llama_cpp.llama_token * capacity)()
        n = llama_cpp.llama_tokenize(self.vocab, raw, len(raw), buf, capacity, add_special, True)
        if n < 0:
            capacity = -n
            buf = (llama_cpp.llama_token * capacity)()
            n = llama_cpp.llama_tokenize(self.vocab, raw, len(raw), buf, capacity, add_special, True)
        tokens = list(buf[:n])
        if len(tokens) > 1 and tokens[0] == tokens[1] == self.bos:
            tokens.pop(0)  # a template that writes BOS itself plus the vocabulary's own
        return tokens

    def piece(self, token: int, special: bool = False) -> bytes:
        buf = ctypes.create_string_buffer(256)
        n = llama_cpp.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        return buf.raw[: max(0, n)]

    def is_eog(self, token: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(self.vocab, token))

    # --- decoding (batcher thread only) ------------------------------------------------------

    def decode(self) -> bool:
        """Decode the batch; False when ``request_abort`` stopped an abortable step (the step's last
        micro-batch is then gone from the cells, earlier ones stay: cut them to roll it back)."""
        self.batch.struct.n_tokens = self.batch.n
        rc = llama_cpp.llama_decode(self.ctx, self.batch.struct)
        if rc == 2 and self._abortable:
            return False
        if rc != 0:
            raise EngineFailed(f"llama_decode failed with code {rc} on a batch of {self.batch.n} tokens")
        return True

    def set_abortable(self, on: bool) -> None:
        """Whether ``request_abort`` may stop the next decode steps."""
        if on != self._abortable:
            flag = self._abort_flag if on else _NEVER
            llama_cpp.llama_set_abort_callback(self.ctx, _STRLEN, ctypes.cast(flag, ctypes.c_void_p))
            self._abortable = on

    def request_abort(self) -> None:
        """Stop the abortable decode step running now, or the next one (any thread)."""
        self._abort_flag[0] = b"\x01"

    def clear_abort(self) -> None:
        self._abort_flag[0] = b"\x00"

    def set_embeddings(self, on: bool) -> None:
        if on != self._embeddings_on:
            llama_cpp.llama_set_embeddings(self.ctx, on)
            self._embeddings_on = on

    def embedding(self, seq_id: int) -> np.ndarray:
        ptr = llama_cpp.llama_get_embeddings_seq(self.ctx, seq_id)
        if not ptr:
            raise EngineFailed("llama.cpp returned no pooled embedding")
        size = self.n_cls_out if self.pooling == "rank" else self.n_embd
        return np.ctypeslib.as_array(ptr, shape=(size,)).copy()

    def keep_prefix(self, seq_id: int, n_keep: int) -> bool:
        """Drop the sequence's cells from position ``n_keep`` on; False if the cache cannot cut there."""
        if not llama_cpp.llama_memory_seq_rm(self.memory, seq_id, n_keep, -1):
            return False
        if self.n_swa and n_keep > 0:
            # A sliding-window cache forgets old cells; reuse needs the window before n_keep intact.
            pos_min = llama_cpp.llama_memory_seq_pos_min(self.memory, seq_id)
            if pos_min > max(0, n_keep - self.n_swa):
                return False
        return True

    def cut(self, seq_id: int, n_keep: int) -> bool:
        """Drop the sequence's cells from position ``n_keep`` on (a rejected draft's); False if it failed."""
        return bool(llama_cpp.llama_memory_seq_rm(self.memory, seq_id, n_keep, -1))

    def copy_seq(self, source: int, target: int) -> None:
        """Make ``target``'s cells a copy of ``source``'s (then cut it with ``keep_prefix``). With a
        KV stream per slot llama.cpp copies the whole stream, at the start of the next decode."""
        llama_cpp.llama_memory_seq_cp(self.memory, source, target, -1, -1)

    def clear_seq(self, seq_id: int) -> None:
        llama_cpp.llama_memory_seq_rm(self.memory, seq_id, -1, -1)

    def save_seq(self, seq_id: int) -> bytearray:
        """The sequence's state (its KV cells and their positions); empty if llama.cpp gave none."""
        size = llama_cpp.llama_state_seq_get_size(self.ctx, seq_id)
        data = bytearray(max(0, size))
        if size <= 0:
            return data
        view = (ctypes.c_uint8 * size).from_buffer(data)
        written = llama_cpp.llama_state_seq_get_data(self.ctx, view, size, seq_id)
        del view
        del data[max(0, written) :]
        return data

    def restore_seq(self, seq_id: int, data: bytearray) -> bool:
        """Replace the sequence's cells with a state ``save_seq`` gave; False (cells cleared) if refused."""
        self.clear_seq(seq_id)
        view = (ctypes.c_uint8 * len(data)).from_buffer(data)
        if llama_cpp.llama_state_seq_set_data(self.ctx, view, len(data), seq_id) == 0:
            self.clear_seq(seq_id)
            return False
        return True

    # --- LoRA adapters (batcher thread only) --------------------------------------------------

    def load_adapter(self, path: Path) -> Any:
        handle = llama_cpp.llama_adapter_lora_init(self.model, str(path).encode())
        if not handle:
            raise ModelFileInvalid(f"{path} is not a LoRA adapter GGUF for this model (see the engine log)")
        return handle

    def free_adapter(self, handle: Any) -> None:
        llama_cpp.llama_adapter_lora_free(handle)

    def set_adapters(self, handles: list[Any], scales: list[float]) -> None:
        n = len(handles)
        array = (llama_cpp.llama_adapter_lora_p_ctypes * n)(*handles) if n else None
        scale_array = (ctypes.c_float * n)(*scales) if n else None
        rc = llama_cpp.llama_set_adapters_lora(self.ctx, array, n, scale_array)
        if rc != 0:
            raise EngineFailed(f"llama.cpp refused the adapter set (code {rc})")

    def close(self) -> None:
        llama_cpp.llama_free(self.ctx)
        llama_cpp.llama_model_free(self.model)
