"""Which free slot a new prompt takes, and whether to copy its cached prefix from another slot.

Each slot is one llama.cpp sequence whose KV cells hold the tokens it last saw (its prompt
cache). Taking a slot keeps only the part of its cache the new prompt starts with and destroys
the rest, so the choice decides whose cache survives:

- a slot whose last prompt the new one holds whole is the prompt's own conversation coming back
  (its cells are the previous turn; only the answer's tail may be re-rendered differently): take
  it as it is, or else an empty slot;
- otherwise take the slot whose cells are worth least: what taking it destroys is the part of its
  cache the new prompt does not reuse and no other slot also holds. An empty slot, a copy of a
  prefix another slot holds, or a prefix's own slot whose tail is a short one-shot question costs
  little; the only copy of another system prompt (hundreds of tokens to prefill again) or a long
  conversation between turns costs much. Without this, every newcomer under a cached system prompt
  copied it over another prompt's only copy, and with more prompts than slots the caches filled
  with duplicates (measured: 36-49% of prompt tokens cached where llama-server, taking the prefix's
  own slot, kept 63%; docs/BENCHMARKS.md, "The cluster against a plain Service");
- among slots within ``COPY_MIN_TOKENS`` of the least loss, take one next to the busy ones, then an
  empty one, then the least recently used, so that the caches of conversations between turns
  survive a newcomer that merely shares their system prompt, and busy slots stay in runs of
  consecutive ids. With one KV stream per slot,
  llama.cpp puts only consecutive sequence ids into one micro-batch, and every micro-batch reads
  all the weights again: 8 streams on scattered slots decode in up to 8 graph computations
  instead of one (measured: 35 ms per step on slots 0-7, 44-59 ms on the slots least recently
  used after 32 streams; docs/BENCHMARKS.md, "Engine serving path");
- then, when some other slot (busy or idle) shares a longer prefix with the prompt — by at
  least ``COPY_MIN_TOKENS`` — copy that slot's cells over (llama.cpp ``seq_cp``) and prefill
  only the rest: a newcomer under a known system prompt starts from its cached cells without
  evicting the conversation that holds them.

This is what llama.cpp's server reaches with a host-memory prompt cache; here the cells are
copied between slots directly.
"""

from __future__ import annotations

from collections.abc import Sequence as Seq
from dataclasses import dataclass

from nodeagent.engine.sequence import AdapterKey, Slot, common_prefix

# A copy moves one slot's whole KV stream (llama.cpp cannot copy part of a stream): about as
# much memory traffic as a few tokens of prefill on the same model, so copying pays from a few
# dozen shared tokens on.
COPY_MIN_TOKENS = 32


@dataclass(frozen=True)
class SlotChoice:
    slot: Slot
    donor: Slot | None  # another slot whose cells to copy into ``slot`` first
    reuse: int  # prompt tokens already cached in ``slot`` (after the copy); at most len(prompt) - 1


def reusable(slot: Slot, prompt: list[int], adapters: AdapterKey) -> int:
    """Prompt tokens ``slot``'s cache holds (0 when computed under other LoRA adapters)."""
    if slot.cache_adapters != adapters:
        return 0
    return common_prefix(slot.cached, prompt)


def loss(slot: Slot, slots: Seq[Slot], reused: int) -> int:
    """Cached tokens taking ``slot`` destroys: those past the ``reused`` prefix that no other slot
    also holds (under the same adapters)."""
    if not slot.cached:
        return 0
    held = max(
        (common_prefix(slot.cached, o.cached) for o in slots
         if o is not slot and o.cache_adapters == slot.cache_adapters),
        default=0,
    )  # fmt: skip
    return len(slot.cached) - max(reused, held)


def new_runs(slot_id: int, busy: set[int]) -> int:
    """Micro-batches a step gains when ``slot_id`` joins the ``busy`` slots: 1 alone, 0 next to a run,
    -1 when it joins two runs into one."""
    return 1 - (slot_id - 1 in busy) - (slot_id + 1 in busy)


def choose_slot(slots: Seq[Slot], free: Seq[Slot], prompt: list[int], adapters: AdapterKey) -> SlotChoice:
    """The slot (one of ``free``) for ``prompt``, with the donor to copy from if any (see the module)."""
    shared = {s.id: reusable(s, prompt, adapters) for s in slots}
    # The conversation's own slot: the prompt holds the whole prompt that slot last saw.
    own = [s for s in free if s.cached and shared[s.id] >= min(s.prompt_tokens, len(s.cached))]
    if own:
        slot = max(own, key=lambda s: (shared[s.id], -s.id))
    else:
        busy = {s.id for s in slots} - {s.id for s in free}
        losses = {s.id: loss(s, slots, shared[s.id]) for s in free}
        cheapest = min(losses.values())
        candidates = [s for s in free if losses[s.id] < cheapest + COPY_MIN_TOKENS]
        slot = min(candidates, key=lambda s: (new_runs(s.id, busy), bool(s.cached), s.last_used, s.id))
    donor = max(slots, key=lambda s: (shared[s.id], s is slot))
    limit = max(len(prompt) - 1, 0)  # keep one prompt token to decode: its logits start generation
    if donor is slot or shared[donor.id] < shared[slot.id] + COPY_MIN_TOKENS:
        return SlotChoice(slot, None, min(shared[slot.id], limit))
    return SlotChoice(slot, donor, min(shared[donor.id], limit))
