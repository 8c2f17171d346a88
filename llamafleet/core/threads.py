"""CPU threads per replica: the one rule the scheduler counts with and the agent starts engines by.

A replica asks for a thread count (the Model's ``threads``) or leaves it to the node (0). The
scheduler holds a node's CPUs like its memory: each replica holds ``cpu_request`` of them, and a
node whose CPUs are all held takes no more replicas unless their Model allows sharing. The agent
then gives every engine an explicit count (``share_threads``): asked-for counts as asked, a replica
that offloads every layer to a GPU the one thread it needs to feed it, and the replicas left to the
node share what remains — on a 2-core node, one replica gets 2 threads and two get 1 each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

GPU_MODE_THREADS = 1  # every layer on a GPU: the CPU only schedules the graph and samples


@dataclass(frozen=True)
class ThreadWant:
    """What one replica on a node asks for: ``threads`` (0: the node decides), and whether it runs
    entirely on a GPU."""

    threads: int = 0
    gpu_mode: bool = False


def cpu_request(threads: int) -> int:
    """CPUs a replica holds on its node for placement: what it asks for, else one (it shares the rest)."""
    return threads if threads > 0 else 1


def share_threads(usable: int, wants: Sequence[ThreadWant]) -> list[int]:
    """Threads for each replica on a node with ``usable`` CPUs, in the order given (earlier replicas
    get the remainder of an uneven split). Never 0; more than ``usable`` in all only when the replicas
    asked for more (a Model that allows sharing, or a node that was filled before its CPUs were known)."""
    usable = max(1, usable)
    threads = [w.threads if w.threads > 0 else GPU_MODE_THREADS if w.gpu_mode else 0 for w in wants]
    auto = [i for i, t in enumerate(threads) if t == 0]
    if auto:
        left = max(0, usable - sum(threads))
        each, extra = divmod(left, len(auto))
        for rank, i in enumerate(auto):
            threads[i] = max(1, each + (1 if rank < extra else 0))
    return threads


# The engine's endpoint through which the agent moves a running engine's share (PUT, the replica secret).
THREADS_PATH = "/threads"


class ThreadsRequest(BaseModel):
    """The body of ``PUT /threads``: the count llama.cpp computes with from its next decode step."""

    model_config = ConfigDict(extra="forbid")

    threads: int = Field(ge=1, le=1024)
