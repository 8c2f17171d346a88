"""A shape-only model of ggml's computation graphs: tensors, the ops llama.cpp's decoders use, and
graph building in ggml's order.

Nothing is computed. Each op makes the tensor ggml would make (type, shape ``ne``, strides ``nb``,
sources, whether it is a view) so that ``llamafleet.fit.galloc`` can replay ggml-alloc on the
graph and find the compute buffer llama.cpp reserves. The rules are ggml's (ggml/src/ggml.c in
llama.cpp as vendored by llama-cpp-python 0.3.36): a view shares its root tensor's memory
(``view_src`` is always the root), ``ggml_dup_tensor`` results are contiguous, and
``Graph.expand`` visits sources depth first, left to right, like ``ggml_build_forward_expand``,
so nodes and leafs come out in the order ggml-alloc sees them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

TYPE_SIZE = {"f32": 4, "f16": 2, "i32": 4, "i64": 8}
# ops ggml-alloc may compute in place of a source with the same layout (ggml_op_can_inplace)
INPLACE_OPS = frozenset(
    {"SCALE", "ADD", "ADD1", "SUB", "MUL", "DIV", "SQR", "SQRT", "LOG", "UNARY", "ROPE",
     "RMS_NORM", "CLAMP", "SOFT_MAX"}
)  # fmt: skip

Shape = tuple[int, int, int, int]


@dataclass(eq=False, slots=True)
class Tensor:
    """One ggml tensor. It also carries ggml-alloc's bookkeeping (``llamafleet.fit.galloc``), so a
    graph is allocated once; build a new one to allocate again."""

    name: str
    op: str  # "NONE" for leafs (inputs, weights, caches)
    type: str  # a TYPE_SIZE key; external tensors use the type of their rows as far as views need it
    ne: Shape
    nb: Shape
    src: tuple[Tensor, ...] = ()
    view_src: Tensor | None = None  # the root tensor whose memory a view shares
    external: bool = False  # weights and KV cache: in their own buffers, never in the compute buffer
    is_input: bool = False  # ggml_set_input
    is_output: bool = False  # ggml_set_output: never freed, never overwritten in place
    nbytes: int = field(init=False)  # ggml_nbytes
    # ggml-alloc's hash node for this tensor
    children: int = field(default=0, init=False)
    views: int = field(default=0, init=False)
    offset: int = field(default=-1, init=False)
    own: bool = field(default=False, init=False)  # allocated by (and freeable through) the allocator

    def __post_init__(self) -> None:
        ne, nb = self.ne, self.nb
        if ne[0] == 0 or ne[1] == 0 or ne[2] == 0 or ne[3] == 0:
            self.nbytes = 0
        else:
            self.nbytes = (
                TYPE_SIZE[self.type]
                + (ne[0] - 1) * nb[0]
                + (ne[1] - 1) * nb[1]
                + (ne[2] - 1) * nb[2]
                + (ne[3] - 1) * nb[3]
            )

    @property
    def n_elements(self) -> int:
        return self.ne[0] * self.ne[1] * self.ne[2] * self.ne[3]

    @property
    def is_contiguous(self) -> bool:
        return self.nb == contiguous_strides(self.type, self.ne)


def contiguous_strides(type_: str, ne: Shape) -> Shape:
    size = TYPE_SIZE[type_]
    return (size, size * ne[0], size * ne[0] * ne[1], size * ne[0] * ne[1] * ne[2])


def _shape(*dims: int) -> Shape:
    padded = (*dims, 1, 1, 1, 1)[:4]
    return (padded[0], padded[1], padded[2], padded[3])


def same_layout(a: Tensor, b: Tensor) -> bool:
    return a.type == b.type and a.ne == b.ne and a.nb == b.nb


def new_tensor(name: str, type_: str, *dims: int, is_input: bool = False) -> Tensor:
    ne = _shape(*dims)
    return Tensor(name, "NONE", type_, ne, contiguous_strides(type_, ne), is_input=is_input)


def external(name: str, *dims: int, type_: str = "f16") -> Tensor:
    """A weight or a KV cache tensor: already in a backend buffer."""
    ne = _shape(*dims)
    return Tensor(name, "NONE", type_, ne, contiguous_strides(type_, ne), external=True)


def _op(name: str, op: str, type_: str, ne: Shape, *src: Tensor) -> Tensor:
    return Tensor(name, op, type_, ne, contiguous_strides(type_, ne), src=src)


def _view(a: Tensor, name: str, op: str, ne: Shape, nb: Shape) -> Tensor:
    return Tensor(name, op, a.type, ne, nb, src=(a,), view_src=a.view_src or a, external=a.external)


# --- views (no memory of their own) ---------------------------------------------------------------


def reshape(a: Tensor, *dims: int) -> Tensor:
    ne = _shape(*dims)
    return _view(a, f"{a.name} (reshaped)", "RESHAPE", ne, contiguous_strides(a.type, ne))


def view(a: Tensor, dims: tuple[int, ...], strides: tuple[int, ...]) -> Tensor:
    """ggml_view_Nd: ``strides`` are nb[1:], nb[0] stays the element size."""
    ne = _shape(*dims)
    nb = [TYPE_SIZE[a.type], *strides]
    while len(nb) < 4:
        nb.append(nb[-1] * ne[len(nb) - 1])
    return _view(a, f"{a.name} (view)", "VIEW", ne, (nb[0], nb[1], nb[2], nb[3]))


def permute(a: Tensor, *axes: int) -> Tensor:
    ne = [0, 0, 0, 0]
    nb = [0, 0, 0, 0]
    for i, axis in enumerate(axes):
        ne[axis], nb[axis] = a.ne[i], a.nb[i]
    return _view(a, f"{a.name} (permuted)", "PERMUTE", _shape(*ne), (nb[0], nb[1], nb[2], nb[3]))


# --- ops (each result is a new contiguous tensor unless noted) ------------------------------------


def dup_op(name: str, op: str, a: Tensor, *others: Tensor) -> Tensor:
    """An op whose result has its first source's type and shape (ggml_dup_tensor)."""
    return _op(name, op, a.type, a.ne, a, *others)


def mul_mat(name: str, a: Tensor, b: Tensor) -> Tensor:
    return _op(name, "MUL_MAT", "f32", (a.ne[1], b.ne[1], b.ne[2], b.ne[3]), a, b)


def get_rows(name: str, a: Tensor, rows: Tensor) -> Tensor:
    return _op(name, "GET_ROWS", "f32", (a.ne[0], rows.ne[0], rows.ne[1], rows.ne[2]), a, rows)


def cont(name: str, a: Tensor, *dims: int) -> Tensor:
    return _op(name, "CONT", a.type, _shape(*dims) if dims else a.ne, a)


def glu_split(name: str, a: Tensor, b: Tensor) -> Tensor:
    """swiglu/geglu of two halves held in two tensors (ggml_glu_impl with b)."""
    return _op(name, "GLU", a.type, a.ne, a, b)


def set_rows(a: Tensor, rows: Tensor, idxs: Tensor) -> Tensor:
    """Writes ``rows`` into ``a`` (the KV cache): the result is a view of ``a``; sources b, c, a."""
    return Tensor(f"{a.name} (view)", "SET_ROWS", a.type, a.ne, a.nb, src=(rows, idxs, a),
                  view_src=a.view_src or a, external=a.external)  # fmt: skip


def flash_attn_ext(name: str, q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
    return _op(name, "FLASH_ATTN_EXT", "f32", (v.ne[0], q.ne[2], q.ne[1], q.ne[3]), q, k, v, mask)


@dataclass
class Graph:
    """Nodes and leafs in the order ggml_build_forward_expand adds them."""

    nodes: list[Tensor] = field(default_factory=list)
    leafs: list[Tensor] = field(default_factory=list)
    _seen: set[int] = field(default_factory=set)

    def expand(self, tensor: Tensor) -> Tensor:
        if id(tensor) not in self._seen:
            self._visit(tensor)
        return tensor

    def _visit(self, t: Tensor) -> None:
        """Depth first: sources left to right, then the tensor. Weights and caches (external) are
        not recorded as leafs: nothing in the compute buffer is allocated for them."""
        seen = self._seen
        seen.add(id(t))
        for src in t.src:
            if id(src) not in seen:
                self._visit(src)
        if t.op != "NONE":
            self.nodes.append(t)
        elif not t.external:
            self.leafs.append(t)
