"""Prompt states kept in host memory after their slot is taken (llama-server's ``--cache-ram``).

A slot's KV cells are its prompt cache, but there are only as many caches as slots: with more
conversations than slots, a conversation's next turn finds its slot holding another's cells and
prefills its whole history again. So before a new prompt destroys at least ``MIN_SAVED`` tokens of
a slot's cells that no other slot also holds, the batcher saves the slot's state (llama.cpp's
per-sequence state: the KV cells and their positions) here; when a new prompt shares more with a
saved state than with any slot — by at least ``MIN_SAVED`` tokens — the state is restored into the
slot it takes and only the rest is prefilled. Measured on the cluster benchmark's multi-turn
workload (docs/BENCHMARKS.md): llama-server, whose default keeps 8 GiB of such states, kept 61-72%
of prompt tokens cached where our engine, with its slots alone, kept 44-52%.

The store is bounded in bytes and drops the least recently used state first; a state whose tokens
begin another's that is saved later (the same conversation, a turn further) is dropped then, since
the longer one serves every prompt the shorter one could. Restoring a state copies it, so one saved
system prompt can seed any number of slots. Batcher thread only.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

from nodeagent.engine.sequence import AdapterKey, common_prefix

# Saving and restoring copy the whole sequence's cells (memory traffic like a few tokens of prefill):
# worth it from a few dozen tokens on, the same threshold as copying cells between slots.
MIN_SAVED = 32
# The cap's default (llamafleet/contract/replica.py: DEFAULT_CACHE_RAM_MIB) is 1 GiB where llama-server
# keeps up to 8: placement counts the whole cap in a replica's host memory, so a larger default would
# keep replicas off nodes they fit; enough for dozens of long conversations on a small model.


@dataclass(eq=False)
class SavedState:
    tokens: list[int]  # what the cells hold, in order
    adapters: AdapterKey  # the LoRA adapters the cells were computed under
    prompt_tokens: int  # the slot's last prompt length (its cells' start; the rest was generated)
    data: bytearray  # llama_state_seq_get_data's bytes

    @property
    def size(self) -> int:
        return len(self.data)


class HostCache:
    """Saved prompt states, least recently used first out, within ``limit_bytes``."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self._states: collections.OrderedDict[int, SavedState] = collections.OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._states)

    @property
    def enabled(self) -> bool:
        return self.limit_bytes > 0

    def holds(self, tokens: list[int], adapters: AdapterKey) -> bool:
        """Whether a saved state already begins with all of ``tokens`` (saving them again is waste)."""
        return any(
            s.adapters == adapters and len(s.tokens) >= len(tokens) and s.tokens[: len(tokens)] == tokens
            for s in self._states.values()
        )

    def best(self, prompt: list[int], adapters: AdapterKey) -> tuple[SavedState | None, int]:
        """The saved state sharing the longest prefix with ``prompt`` (under ``adapters``), and its length."""
        found: SavedState | None = None
        longest = 0
        for state in self._states.values():
            if state.adapters != adapters or not prompt or state.tokens[:1] != prompt[:1]:
                continue
            n = common_prefix(state.tokens, prompt)
            if n > longest or (n == longest and found is not None and len(state.tokens) < len(found.tokens)):
                found, longest = state, n
        return found, longest

    def touch(self, state: SavedState) -> None:
        """Mark ``state`` used now (no-op when it was dropped meanwhile: its data is still the caller's)."""
        if id(state) in self._states:
            self._states.move_to_end(id(state))

    def save(self, state: SavedState) -> bool:
        """Keep ``state`` (dropping the states it extends, then the least recently used as needed);
        False when it alone is larger than the limit."""
        if state.size > self.limit_bytes:
            return False
        for key, old in list(self._states.items()):
            if (old.adapters == state.adapters and len(old.tokens) <= len(state.tokens)
                    and state.tokens[: len(old.tokens)] == old.tokens):  # fmt: skip
                self._drop(key)
        while self._states and self.bytes + state.size > self.limit_bytes:
            self._drop(next(iter(self._states)))
        self._states[id(state)] = state
        self.bytes += state.size
        return True

    def remove(self, state: SavedState) -> None:
        if id(state) in self._states:
            self._drop(id(state))

    def _drop(self, key: int) -> None:
        self.bytes -= self._states.pop(key).size
