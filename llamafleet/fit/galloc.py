"""ggml-alloc's graph allocator, replayed: the compute buffer size llama.cpp reserves for a graph.

llama.cpp sizes each backend's compute buffer by running ggml_gallocr over its worst-case graph:
inputs first, then every node in order, each taking the best-fitting free block (or the end of
the buffer), reusing a source's memory in place when the op allows it, and returning a tensor's
memory once its last consumer has run. The buffer is the highest offset ever used. Freed
blocks that are too small for what comes next are the fragmentation that a closed formula
cannot follow, so this module does what ggml-alloc.c does (ggml_dyn_tallocr_alloc/free_bytes,
ggml_gallocr_allocate_node/alloc_graph_impl in llama.cpp as vendored by llama-cpp-python 0.3.36),
on the shape-only graphs of ``llamafleet.fit.ggml_graph``.
"""

from __future__ import annotations

from llamafleet.fit.ggml_graph import INPLACE_OPS, Graph, Tensor, same_layout

CPU_ALIGNMENT = 32  # TENSOR_ALIGNMENT, the CPU buffer type's alignment


def _align(size: int, alignment: int) -> int:
    return (size + alignment - 1) // alignment * alignment


class DynamicAllocator:
    """ggml_dyn_tallocr with one chunk (a CPU or GPU buffer has no practical size limit here)."""

    def __init__(self, alignment: int) -> None:
        self.alignment = alignment
        self.free_blocks: list[list[int]] = [[0, 1 << 62]]  # [offset, size], sorted by offset
        self.max_size = 0

    def alloc(self, size: int) -> int:
        size = _align(size, self.alignment)
        blocks = self.free_blocks
        best, best_size = -1, None
        for i in range(len(blocks) - 1):  # best fit among all but the last block
            if blocks[i][1] >= size and (best_size is None or blocks[i][1] <= best_size):
                best, best_size = i, blocks[i][1]
        if best == -1:
            best = len(blocks) - 1  # the last block is unbounded
        block = blocks[best]
        offset = block[0]
        block[0] += size
        block[1] -= size
        if block[1] == 0:
            del blocks[best]
        self.max_size = max(self.max_size, offset + size)
        return offset

    def free(self, offset: int, size: int) -> None:
        size = _align(size, self.alignment)
        blocks = self.free_blocks
        for i, block in enumerate(blocks):
            if block[0] + block[1] == offset:  # the freed range follows this block
                block[1] += size
                if i < len(blocks) - 1 and block[0] + block[1] == blocks[i + 1][0]:
                    block[1] += blocks[i + 1][1]
                    del blocks[i + 1]
                return
            if offset + size == block[0]:  # the freed range precedes this block
                block[0] = offset
                block[1] += size
                if i > 0 and blocks[i - 1][0] + blocks[i - 1][1] == block[0]:
                    blocks[i - 1][1] += block[1]
                    del blocks[i]
                return
        position = 0
        while position < len(blocks) and blocks[position][0] < offset:
            position += 1
        blocks.insert(position, [offset, size])


class GraphAllocator:
    """One replay of ggml_gallocr_alloc_graph_impl over a graph with a single buffer."""

    def __init__(self, alignment: int = CPU_ALIGNMENT) -> None:
        self.memory = DynamicAllocator(alignment)

    def _allocate(self, t: Tensor) -> None:
        if t.external or t.own or t.view_src is not None:
            return
        t.own = True
        if t.op in INPLACE_OPS:
            # a source this allocator owns (never a view: views are not "own" in ggml-alloc), not an
            # output, with the same layout, whose only consumer is this node: take over its memory
            for parent in t.src:
                if not parent.own or parent.is_output or not same_layout(t, parent):
                    continue
                if parent.children == 1 and parent.views == 0:
                    t.offset = parent.offset
                    parent.own = False
                    return
        t.offset = self.memory.alloc(t.nbytes)

    def _free(self, t: Tensor) -> None:
        if t.is_output:
            return
        self.memory.free(t.offset, t.nbytes)
        t.own = False

    def run(self, graph: Graph) -> int:
        """Allocate ``graph`` as ggml-alloc does and return the buffer size it needs, in bytes."""
        for leaf in graph.leafs:
            self._allocate(leaf)
        for node in graph.nodes:
            if node.view_src is not None:
                node.view_src.views += 1
            if node.is_input:
                self._allocate(node)
            for src in node.src:
                src.children += 1
                if src.is_input:
                    self._allocate(src)
        for node in graph.nodes:
            for parent in node.src:
                self._allocate(parent)
            self._allocate(node)
            for parent in node.src:
                parent.children -= 1
                if parent.children != 0 or parent.views != 0:
                    continue
                root = parent.view_src
                if root is not None:
                    root.views -= 1
                    if root.views == 0 and root.children == 0 and root.own:
                        self._free(root)
                elif parent.own:
                    self._free(parent)
        return self.memory.max_size


def own_bytes(graph: Graph, alignment: int = CPU_ALIGNMENT) -> int:
    """All of ``graph``'s own tensors side by side: no allocation of it can need more."""
    return sum(
        _align(t.nbytes, alignment)
        for t in (*graph.leafs, *graph.nodes)
        if not t.external and t.view_src is None
    )
