"""Speculative decoding with a draft model: a smaller GGUF of the same vocabulary guesses each
sequence's next tokens, and the batcher verifies them in its batched step (``speculative.py``).

The draft model has a context of its own with one sequence per slot, mirroring the tokens in the
target's cells for that slot. Each step, every sequence that drafts is caught up (the tokens the
target accepted since the draft last saw the slot: the prompt at first, then the sampled token), and
the draft decodes greedily in rounds of one row per drafting sequence — the rounds are batched across
slots the way the target's steps are. A sequence stops drafting at its wanted length or when the
draft's own top token is less likely than ``p_min`` (it would likely be rejected; llama-server's
``--draft-p-min``). The last drafted token is never decoded by the draft: the next step's catch-up
covers it if the target keeps it.

Vocabularies must agree token for token: a draft token is a target token id. ``check_vocabularies``
refuses a pair that differs, naming the first difference.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from llamafleet.core.errors import LlamafleetError, ModelFileInvalid
from nodeagent.engine.native import NativeModel
from nodeagent.engine.sampling import logits_row

log = logging.getLogger(__name__)

P_MIN = 0.75  # llama-server's --draft-p-min default


class VocabularyMismatch(ModelFileInvalid):
    """The draft model's tokens are not the model's: its drafts would be other tokens' ids."""


def check_vocabularies(model: NativeModel, draft: NativeModel, draft_name: str) -> None:
    """Refuse a draft whose vocabulary differs from the model's: size, BOS/EOS, or any token's text."""
    what = f"the draft model {draft_name}"
    if draft.n_vocab != model.n_vocab:
        raise VocabularyMismatch(
            f"{what} has {draft.n_vocab} tokens and the model {model.n_vocab}: a draft model must share the "
            "model's vocabulary (the same tokenizer, e.g. a smaller model of the same family)"
        )
    for name in ("bos", "eos"):
        if getattr(draft, name) != getattr(model, name):
            raise VocabularyMismatch(
                f"{what} has {name.upper()} token {getattr(draft, name)} and the model "
                f"{getattr(model, name)}: a draft model must share the model's vocabulary"
            )
    for token in range(model.n_vocab):
        mine, theirs = model.token_text(token), draft.token_text(token)
        if mine != theirs:
            raise VocabularyMismatch(
                f"{what}'s token {token} is {theirs!r} where the model's is {mine!r}: a draft model must "
                "share the model's vocabulary (the same tokenizer)"
            )


def load_draft(model: NativeModel, path: Path) -> NativeModel:
    """Load the draft model beside ``model``: the same slots, context, threads and GPU layers, no
    embeddings and no RPC parts (a draft is small); refused when its vocabulary differs."""
    config = dataclasses.replace(model.config, model_path=path, embeddings=False, remote_parts=())
    try:
        draft = NativeModel(config)
    except ModelFileInvalid as exc:
        raise ModelFileInvalid(f"the draft model: {exc.message}") from None
    try:
        check_vocabularies(model, draft, path.name)
    except VocabularyMismatch:
        draft.close()
        raise
    log.info("draft model %s: %d tokens of vocabulary, the model's", path.name, draft.n_vocab)
    return draft


class DraftModel:
    """The draft model's context and, per slot, the tokens its cells hold (batcher thread only)."""

    def __init__(self, model: NativeModel, p_min: float = P_MIN) -> None:
        self.model = model
        self.p_min = p_min
        self._cells: dict[int, list[int]] = {}  # slot id → tokens in the draft's cells for that slot

    def behind(self, slot_id: int, context_length: int) -> int:
        """About how many tokens the draft must decode to catch up with a context of this length in
        this slot (its cells as they are, taken to be a prefix of the context)."""
        return max(1, context_length - len(self._cells.get(slot_id, ())) + 1)

    def forget(self, slot_id: int) -> None:
        self.model.clear_seq(slot_id)
        self._cells[slot_id] = []

    def draft(self, wants: dict[int, tuple[list[int], int]]) -> dict[int, list[int]]:
        """For each slot id: (the context — the target's cells plus the sampled token —, the most tokens
        wanted, at least 1) → the drafted tokens, greedy, each at least ``p_min`` likely to the draft."""
        drafts: dict[int, list[int]] = {slot: [] for slot in wants}
        batch = self.model.batch
        try:
            picked = self._catch_up(wants)
            while picked:
                batch.clear()
                rows: dict[int, int] = {}
                for slot, token in sorted(picked.items()):
                    if token is None:
                        continue
                    drafts[slot].append(token)
                    if len(drafts[slot]) >= wants[slot][1]:
                        continue
                    cells = self._cells[slot]
                    rows[slot] = batch.add(slot, [token], len(cells), "last")
                    cells.append(token)
                if not rows:
                    break
                self.model.decode()
                picked = self._pick(rows)
        except LlamafleetError as exc:  # a failed draft costs the drafts, never the request
            log.warning("draft model: %s; this step verifies no drafts", exc)
            for slot in wants:
                self.forget(slot)
            return {slot: [] for slot in wants}
        return drafts

    def _pick(self, rows: dict[int, int]) -> dict[int, int | None]:
        """Each row's greedy token, or None where the draft is not sure enough of it."""
        picked: dict[int, int | None] = {}
        for slot, index in rows.items():
            logits = logits_row(self.model.ctx, index, self.model.n_vocab)
            token = int(np.argmax(logits))
            p = 1.0 / float(np.sum(np.exp(logits - logits[token])))
            picked[slot] = token if p >= self.p_min else None
        return picked

    def _catch_up(self, wants: dict[int, tuple[list[int], int]]) -> dict[int, int | None]:
        """Make each slot's cells hold its context: keep the common prefix with what they hold (all
        but the context's last token, which is decoded for its logits), decode the rest in batches;
        each slot's first draft token is picked right after the decode that ends its context."""
        pending: dict[int, list[int]] = {}
        for slot, (context, _) in wants.items():
            cells = self._cells.setdefault(slot, [])
            keep = 0
            limit = min(len(cells), len(context) - 1)
            while keep < limit and cells[keep] == context[keep]:
                keep += 1
            if keep < len(cells) and not self.model.keep_prefix(slot, keep):
                self.model.clear_seq(slot)
                keep = 0
            del cells[keep:]
            pending[slot] = context[keep:]
        batch = self.model.batch
        picked: dict[int, int | None] = {}
        while any(pending.values()):
            batch.clear()
            ended: dict[int, int] = {}
            for slot in sorted(pending):
                tokens = pending[slot]
                if not tokens or batch.room == 0:
                    continue
                chunk, pending[slot] = tokens[: batch.room], tokens[batch.room :]
                index = batch.add(slot, chunk, len(self._cells[slot]), "none" if pending[slot] else "last")
                self._cells[slot].extend(chunk)
                if not pending[slot]:
                    ended[slot] = index
            self.model.decode()
            picked.update(self._pick(ended))
        return picked
