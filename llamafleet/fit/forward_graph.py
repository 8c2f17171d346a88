"""The forward graph llama.cpp reserves its compute buffer for, rebuilt from a ``ModelProfile``.

Follows llama.cpp's decoder builders (src/models/llama.cpp and gemma3.cpp, src/llama-graph.cpp:
build_inp_embd, build_attn with a KV cache, build_attn_mha, build_ffn; llama-kv-cache.cpp: cpy_k,
cpy_v, get_k, get_v; as vendored by llama-cpp-python 0.3.36) op for op and in the same
expansion order, because ggml-alloc's result depends on both. Other dense decoders are built
as the llama graph with the norms their tensors show (QK norms, post-attention/FFN norms):
close, but not checked against llama.cpp. Mixture-of-experts, MLA and recurrent layers are
not modelled (their dense parts are).

Worst-case graphs, as llama.cpp's sched_reserve makes them: a prompt micro-batch of
``graph_tokens`` tokens that are all outputs, over the whole cache (n_kv = every cell of a
stream), and a generation step of one token per sequence.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from llamafleet.fit import ggml_graph as g
from llamafleet.fit.components import ContextParams, kv_cells
from llamafleet.fit.ggml_graph import Graph, Tensor
from llamafleet.fit.profile import ModelProfile

QUANTIZED_KV = frozenset({"q8_0", "q5_1", "q5_0", "q4_1", "q4_0", "iq4_nl"})


@dataclass(frozen=True)
class Block:
    """What one repeating block's graph depends on."""

    n_head: int
    n_head_kv: int
    n_ff: int
    swa: bool
    final: bool = False  # the model's last block: it keeps only the output rows (out_ids)


@dataclass(frozen=True)
class GraphDims:
    """The part of a ``ModelProfile`` the graph depends on (models of one shape share it)."""

    family: str  # "gemma" (scaled embeddings and queries) or "llama"
    n_embd: int
    head_dim_k: int
    head_dim_v: int
    vocab_size: int
    sliding_window: int
    n_head: tuple[int, ...]
    n_head_kv: tuple[int, ...]
    n_ff: tuple[int, ...]
    swa_layers: tuple[bool, ...]
    gated_ffn: bool
    qk_norm: bool
    post_norms: bool

    @property
    def n_layer(self) -> int:
        return len(self.n_head)

    @classmethod
    def of(cls, profile: ModelProfile) -> GraphDims:
        """The profile's fields of the same names, and its architecture's family."""
        family = "gemma" if profile.architecture.startswith("gemma") else "llama"
        shared = {f.name: getattr(profile, f.name) for f in fields(cls) if f.name != "family"}
        return cls(family=family, **shared)


@dataclass(frozen=True)
class GraphSpec:
    """Everything one device's graph depends on; equal specs give equal buffers (a cache key)."""

    family: str
    n_embd: int
    head_dim_k: int
    head_dim_v: int
    vocab_size: int
    max_kv_heads: int
    n_kv: int  # cells a full-attention layer attends over, per stream
    n_kv_swa: int  # the same for sliding-window layers (0: the model has none)
    gated_ffn: bool
    qk_norm: bool
    post_norms: bool
    blocks: tuple[Block, ...]
    has_output: bool
    has_input: bool  # holds the input layer (token embeddings lookup); else its input is copied in

    @classmethod
    def of(
        cls, d: GraphDims, params: ContextParams, layers: list[int], has_output: bool, has_input: bool
    ) -> GraphSpec:
        blocks = tuple(
            Block(d.n_head[il], d.n_head_kv[il], d.n_ff[il], d.swa_layers[il], final=il == d.n_layer - 1)
            for il in layers
        )
        return cls(
            family=d.family,
            n_embd=d.n_embd,
            head_dim_k=d.head_dim_k,
            head_dim_v=d.head_dim_v,
            vocab_size=d.vocab_size,
            max_kv_heads=max(d.n_head_kv),
            n_kv=kv_cells(d.sliding_window, params, swa=False),
            n_kv_swa=kv_cells(d.sliding_window, params, swa=True) if d.sliding_window else 0,
            gated_ffn=d.gated_ffn,
            qk_norm=d.qk_norm,
            post_norms=d.post_norms,
            blocks=blocks,
            has_output=has_output,
            has_input=has_input,
        )


@dataclass(frozen=True)
class Batch:
    tokens: int
    n_seqs: int
    outputs: int


def reserve_batches(params: ContextParams) -> tuple[Batch, Batch]:
    """The prompt and generation micro-batches llama.cpp reserves (llama_context::sched_reserve)."""
    n_seqs = params.n_seq
    return (
        Batch(tokens=params.graph_tokens, n_seqs=n_seqs, outputs=params.graph_tokens),
        Batch(tokens=n_seqs, n_seqs=n_seqs, outputs=n_seqs),
    )


def _hadamard_size(head_dim: int, for_k: bool) -> int:
    """Rows of the rotation llama.cpp applies to a quantized cache (llama_kv_cache::build_input_*_rot)."""
    if not for_k:
        return 64
    n = 64
    while head_dim % (n * 2) == 0:
        n *= 2
    return n


def _hadamard(name: str, cur: Tensor, rot: Tensor) -> Tensor:
    """llama_mul_mat_hadamard: rotate rows of ``rot.ne[0]`` values."""
    n = rot.ne[0]
    flat = (
        g.reshape(cur, n, cur.n_elements // n)
        if cur.is_contiguous
        else g.cont(f"{name}_cont", cur, n, cur.n_elements // n)
    )
    return g.reshape(g.mul_mat(name, rot, flat), *cur.ne)


@dataclass
class _AttentionInputs:
    """One KV cache's graph inputs (llama.cpp builds one set for full and one for sliding layers)."""

    k_idxs: Tensor
    v_idxs: Tensor
    mask: Tensor
    k_rot: Tensor | None
    v_rot: Tensor | None
    n_kv: int


class DecoderGraph:
    """Builds the graph of a spec's blocks (every block on a CPU-only node; a device's on GPUs)."""

    def __init__(self, spec: GraphSpec, params: ContextParams, batch: Batch) -> None:
        self.s = spec
        self.params = params
        self.batch = batch
        self.graph = Graph()
        self.n_stream = 1 if params.unified else batch.n_seqs

    # --- inputs ---------------------------------------------------------------------------------

    def _attention_inputs(self, n_kv: int) -> _AttentionInputs:
        s, params, t = self.s, self.params, self.batch.tokens
        v_trans = not params.flash_attn
        v_rows = t * s.head_dim_v * s.max_kv_heads if v_trans else t  # one index per value when transposed
        mask_type = "f16" if params.flash_attn else "f32"
        k_rot = v_rot = None
        if params.type_k in QUANTIZED_KV and s.head_dim_k % 64 == 0:
            n = _hadamard_size(s.head_dim_k, for_k=True)
            k_rot = g.new_tensor("attn_inp_k_rot", "f32", n, n, is_input=True)
        if params.type_v in QUANTIZED_KV and s.head_dim_v % 64 == 0:
            v_rot = g.new_tensor("attn_inp_v_rot", "f32", 64, 64, is_input=True)
        return _AttentionInputs(
            k_idxs=g.new_tensor("attn_inp_k_idxs", "i64", t, is_input=True),
            v_idxs=g.new_tensor("attn_inp_v_idxs", "i64", v_rows, is_input=True),
            mask=g.new_tensor(
                "attn_inp_kq_mask", mask_type, n_kv, t // self.n_stream, 1, self.n_stream, is_input=True
            ),
            k_rot=k_rot,
            v_rot=v_rot,
            n_kv=n_kv,
        )

    def _embeddings(self) -> Tensor:
        t = self.batch.tokens
        tokens = g.new_tensor("inp_tokens", "i32", t, is_input=True)
        embd = g.get_rows("embd", g.external("token_embd.weight", self.s.n_embd, self.s.vocab_size), tokens)
        self.graph.expand(embd)
        # llama.cpp selects between token and embedding inputs: the unused one is still a graph input
        self.graph.expand(g.new_tensor("inp_embd", "f32", self.s.n_embd, t, is_input=True))
        return embd

    # --- blocks ---------------------------------------------------------------------------------

    def _norm(self, name: str, cur: Tensor) -> Tensor:
        weight = g.external(f"{name}.weight", cur.ne[0], type_="f32")
        return g.dup_op(name, "MUL", g.dup_op("norm", "RMS_NORM", cur), weight)

    def _attention(self, il: int, block: Block, cur: Tensor, inp: _AttentionInputs) -> Tensor:
        s, t = self.s, self.batch.tokens
        heads, kv_heads = block.n_head, block.n_head_kv
        hd_k, hd_v = s.head_dim_k, s.head_dim_v
        q = g.mul_mat(f"Qcur-{il}", g.external("wq", s.n_embd, hd_k * heads), cur)
        k = g.mul_mat(f"Kcur-{il}", g.external("wk", s.n_embd, hd_k * kv_heads), cur)
        v = g.mul_mat(f"Vcur-{il}", g.external("wv", s.n_embd, hd_v * kv_heads), cur)
        q, k, v = (
            g.reshape(q, hd_k, heads, t),
            g.reshape(k, hd_k, kv_heads, t),
            g.reshape(v, hd_v, kv_heads, t),
        )
        if s.qk_norm:
            q = self._norm(f"Qcur_normed-{il}", q)
        q = g.dup_op(f"Qcur-{il}", "ROPE", q, self.inp_pos)
        if s.qk_norm:
            k = self._norm(f"Kcur_normed-{il}", k)
        k = g.dup_op(f"Kcur-{il}", "ROPE", k, self.inp_pos)
        if s.family == "gemma":
            q = g.dup_op(f"Qcur_scaled-{il}", "SCALE", q)
        if inp.k_rot is not None:
            q = _hadamard(f"Qcur_rot-{il}", q, inp.k_rot)
            k = _hadamard(f"Kcur_rot-{il}", k, inp.k_rot)
        if inp.v_rot is not None:
            v = _hadamard(f"Vcur_rot-{il}", v, inp.v_rot)
        order = (q, k, v) if s.n_kv_swa else (q, v, k)  # the sliding-window builder expands K before V
        for tensor in order:
            self.graph.expand(tensor)
        self.graph.expand(self._store(il, k, inp.k_idxs, transposed=False))
        self.graph.expand(self._store(il, v, inp.v_idxs, transposed=not self.params.flash_attn))
        out = self._attention_core(il, block, q, inp)
        if inp.v_rot is not None:
            out = _hadamard(f"kqv_out_rot-{il}", out, inp.v_rot)
        return g.mul_mat(f"attn_out-{il}", g.external("wo", hd_v * heads, s.n_embd), out)

    def _store(self, il: int, cur: Tensor, idxs: Tensor, transposed: bool) -> Tensor:
        """llama_kv_cache::cpy_k / cpy_v: write this batch's K or V rows into the cache."""
        n_embd_gqa = cur.ne[0] * cur.ne[1]
        cache = g.external(
            f"cache_l{il}", n_embd_gqa, self.batch.tokens, self.n_stream
        )  # a stand-in: only views of it are made
        if not transposed:
            rows = g.view(cur, (n_embd_gqa, cur.ne[2]), (cur.nb[2],))
            if self.n_stream > 1:
                cache = g.reshape(cache, cache.ne[0], cache.ne[1] * cache.ne[2])
            return g.set_rows(cache, rows, idxs)
        flat = (
            g.reshape(cur, n_embd_gqa, cur.ne[2])
            if cur.nb[2] == g.TYPE_SIZE[cur.type] * n_embd_gqa
            else g.cont(f"Vcur_cont-{il}", cur, n_embd_gqa, cur.ne[2])
        )
        return g.set_rows(g.reshape(cache, 1, cache.n_elements), g.reshape(flat, 1, flat.n_elements), idxs)

    def _attention_core(self, il: int, block: Block, q: Tensor, inp: _AttentionInputs) -> Tensor:
        """build_attn_mha over the cache: flash attention, or KQ → softmax → KQV."""
        s, ns, n_kv = self.s, self.n_stream, inp.n_kv
        k = g.external(f"cache_k_l{il} (view)", s.head_dim_k, block.n_head_kv, n_kv, ns)
        q = g.view(q, (q.ne[0], q.ne[1], q.ne[2] // ns, ns), (q.nb[1], q.nb[2], q.nb[2] * (q.ne[2] // ns)))
        q = g.permute(q, 0, 2, 1, 3)
        k = g.permute(k, 0, 2, 1, 3)
        if self.params.flash_attn:
            v = g.permute(
                g.external(f"cache_v_l{il} (view)", s.head_dim_v, block.n_head_kv, n_kv, ns), 0, 2, 1, 3
            )
            cur = g.flash_attn_ext(f"fattn-{il}", q, k, v, inp.mask)
            cur = g.reshape(cur, cur.ne[0] * cur.ne[1], cur.ne[2] * cur.ne[3])
        else:  # the V cache is transposed
            v = g.permute(
                g.external(f"cache_v_l{il} (view)", n_kv, block.n_head_kv, s.head_dim_v, ns), 0, 2, 1, 3
            )
            kq = g.mul_mat(f"kq-{il}", k, q)
            kq = g.dup_op(f"kq_soft_max-{il}", "SOFT_MAX", kq, inp.mask)
            kqv = g.permute(g.mul_mat(f"kqv-{il}", v, kq), 0, 2, 1, 3)
            cur = g.cont(f"kqv_out-{il}", kqv, kqv.ne[0] * kqv.ne[1], kqv.ne[2] * kqv.ne[3])
        self.graph.expand(cur)
        return cur

    def _ffn(self, il: int, n_ff: int, cur: Tensor) -> Tensor:
        n_embd = self.s.n_embd
        up = g.mul_mat(f"ffn_up-{il}", g.external("up", n_embd, n_ff), cur)
        if self.s.gated_ffn:
            gate = g.mul_mat(f"ffn_gate-{il}", g.external("gate", n_embd, n_ff), cur)
            act = g.glu_split(f"ffn_glu-{il}", gate, up)
        else:
            act = g.dup_op(f"ffn_act-{il}", "UNARY", up)
        return g.mul_mat(f"ffn_out-{il}", g.external("down", n_ff, n_embd), act)

    def _block(self, il: int, block: Block, inp_l: Tensor) -> Tensor:
        inp = self.swa_inputs if block.swa and self.swa_inputs is not None else self.full_inputs
        cur = self._attention(il, block, self._norm(f"attn_norm-{il}", inp_l), inp)
        residual = inp_l
        if block.final:
            cur = g.get_rows(f"attn_rows-{il}", cur, self.out_ids)
            residual = g.get_rows(f"residual_rows-{il}", residual, self.out_ids)
        if self.s.post_norms:
            cur = self._norm(f"attn_post_norm-{il}", cur)
        ffn_inp = g.dup_op(f"ffn_inp-{il}", "ADD", cur, residual)
        cur = self._ffn(il, block.n_ff, self._norm(f"ffn_norm-{il}", ffn_inp))
        if self.s.post_norms:
            cur = self._norm(f"ffn_post_norm-{il}", cur)
        return g.dup_op(f"l_out-{il}", "ADD", cur, ffn_inp)

    def build(self) -> Graph:
        s = self.s
        if s.has_input:
            cur = self._embeddings()
            if s.family == "gemma":
                cur = g.dup_op("inp_scaled", "SCALE", cur)
        else:  # the previous device's output, copied in at the start of this device's split
            cur = self.graph.expand(g.new_tensor("l_in", "f32", s.n_embd, self.batch.tokens, is_input=True))
        self.inp_pos = g.new_tensor("inp_pos", "i32", self.batch.tokens, is_input=True)
        self.full_inputs = self._attention_inputs(s.n_kv)
        self.swa_inputs = self._attention_inputs(s.n_kv_swa) if s.n_kv_swa else None
        self.out_ids = g.new_tensor("out_ids", "i32", self.batch.outputs, is_input=True)
        for il, block in enumerate(s.blocks):
            cur = self._block(il, block, cur)
        if s.has_output:
            cur = self._norm("result_norm", cur)
            cur.is_output = True
            cur = g.mul_mat("result_output", g.external("output", s.n_embd, s.vocab_size), cur)
            cur.is_output = True
        self.graph.expand(cur)
        return self.graph
