"""Continuous batching: one thread that puts every active sequence into each llama_decode step.

Each step: take new requests and cancellations, give free slots to waiting requests (a
conversation's own slot when it comes back, else an empty or least recently used one, with a
shared prefix copied from another slot's cells: ``slot_choice``; only the rest is prefilled),
then build one batch — one token for every generating sequence plus prompt
chunks up to ``prefill_chunk`` tokens — decode it, and sample every sequence that produced
logits. Sequences with different LoRA adapter sets cannot share a step (llama.cpp binds
adapters per context), so groups take turns step by step; embeddings run in steps of their
own with the context's embedding output switched on.

llama_decode releases the GIL, so the HTTP event loop keeps running during a step.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from llamafleet.core.errors import (
    ContextLengthExceeded,
    EngineFailed,
    LlamafleetError,
    Overloaded,
)
from nodeagent.engine.adapters import AdapterRegistry
from nodeagent.engine.draft_model import DraftModel
from nodeagent.engine.host_cache import MIN_SAVED, HostCache, SavedState
from nodeagent.engine.logprobs import TokenLogprob, token_logprob
from nodeagent.engine.metrics import EngineMetrics
from nodeagent.engine.model_server_metrics import ServingLoad
from nodeagent.engine.native import NativeModel
from nodeagent.engine.sampling import SamplerChain, logits_row
from nodeagent.engine.sequence import AdapterKey, Delta, Sequence, Slot, common_prefix
from nodeagent.engine.slot_choice import SlotChoice, choose_slot
from nodeagent.engine.speculative import (
    Acceptance,
    DraftStats,
    NgramDrafter,
    Speculative,
    StepCost,
    calibrate,
    expected_extra,
    worth_verifying,
)
from nodeagent.engine.text import TextStream
from nodeagent.engine.watchdog import DecodeWatchdog

log = logging.getLogger(__name__)

T = TypeVar("T")


class Aborted:
    """A decode step stopped before it finished (a preempting request arrived)."""


ABORTED = Aborted()
Post = Callable[[list[tuple[Sequence, Delta]]], None]


@dataclass(frozen=True)
class BatcherSettings:
    slots: int
    queue_limit: int
    prefill_chunk: int
    speculative: Speculative = "off"  # "ngram": draft by prompt lookup; "draft": by a draft model
    draft_max: int = 8  # most tokens drafted for one sequence in one step
    draft_min: int = 0  # fewest (where a draft is found): verified even where the step cost says no
    cache_ram_bytes: int = 0  # host memory for prompt states saved from slots (0: none kept)


class Batcher:
    def __init__(
        self,
        model: NativeModel,
        settings: BatcherSettings,
        adapters: AdapterRegistry,
        post: Post,
        metrics: EngineMetrics,
        watchdog: DecodeWatchdog | None = None,
        draft: DraftModel | None = None,
    ) -> None:
        self._model = model
        self._draft_model = draft  # speculative "draft": the smaller model that drafts
        self._watchdog = watchdog
        self._settings = settings
        self._adapters = adapters
        self._post = post
        self._metrics = metrics
        self._slots = [Slot(i) for i in range(settings.slots)]
        self._host_cache = HostCache(settings.cache_ram_bytes)
        self._waiting: collections.deque[Sequence] = collections.deque()
        self._suspended: collections.deque[Sequence] = collections.deque()  # resumed first, in order
        self._lock = threading.Condition()
        self._inbox: list[Sequence] = []
        self._queued = 0  # submitted, not yet in a slot (inbox + waiting), guarded by _lock
        self._commands: list[Callable[[], None]] = []
        self._wake = False
        self._stopping = False
        self._turn = 0
        self._uses = 0
        self._outbox: list[tuple[Sequence, Delta]] = []
        self._rate: collections.deque[tuple[float, int]] = collections.deque()
        self._cost: StepCost | None = None  # measured at start when speculating
        self._draft_cost: StepCost | None = None  # the draft model's steps, measured at start
        self._acceptance = Acceptance()  # drafts verified by every sequence: a new one's prior
        self._thread = threading.Thread(target=self._run, name="batcher", daemon=True)
        metrics.slots.set(settings.slots)
        metrics.kv_cells.set(model.n_ctx_seq * settings.slots)
        self.load = ServingLoad(kv_cells=model.n_ctx_seq * settings.slots)  # as of the last step

    # --- any thread --------------------------------------------------------------------------

    @property
    def busy(self) -> int:
        return sum(1 for s in self._slots if s.seq is not None)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._lock.notify()
        self._thread.join()

    def submit(self, seq: Sequence) -> None:
        limit = (
            self._model.n_ctx_seq
            if seq.kind == "generate"
            else min(self._model.n_ctx_seq, self._model.n_ubatch)
        )
        if len(seq.prompt) >= limit + (seq.kind == "embed"):
            self._metrics.rejected.labels("too_long").inc()
            what = "context per slot" if seq.kind == "generate" else "batch size for embeddings"
            raise ContextLengthExceeded(
                f"the input has {len(seq.prompt)} tokens but the {what} is {limit} tokens; "
                "shorten it or serve the model with a larger context",
                len(seq.prompt),
                limit,
                "input" if seq.kind == "embed" else None,
            )
        with self._lock:
            free = len(self._slots) - self.busy
            if self._queued - free >= self._settings.queue_limit:
                self._metrics.rejected.labels("queue_full").inc()
                raise Overloaded(
                    f"all {self._settings.slots} slots are busy and {self._settings.queue_limit} "
                    "requests are already waiting",
                    retry_after=1.0,
                )
            self._queued += 1
            self._inbox.append(seq)
            if seq.preempts and self.busy >= len(self._slots):
                self._model.request_abort()  # it suspends a request: at once, not after this step
            self._lock.notify()

    def cancel(self, seq: Sequence) -> None:
        seq.cancelled = True
        with self._lock:
            self._wake = True
            self._lock.notify()

    def call(self, fn: Callable[[], T]) -> concurrent.futures.Future[T]:
        """Run ``fn`` on the batcher thread between two steps (native calls that touch the context)."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def command() -> None:
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn())
                except BaseException as exc:
                    future.set_exception(exc)

        with self._lock:
            self._commands.append(command)
            self._lock.notify()
        return future

    def slots_view(self) -> list[dict[str, Any]]:
        return [slot.view() for slot in list(self._slots)]

    # --- batcher thread ----------------------------------------------------------------------

    def _run(self) -> None:
        if self._settings.speculative != "off":
            self._calibrate()
        while True:
            with self._lock:
                # Sleep only when there is nothing at all to do: requests still waiting must be admitted
                # even when every slot finished in the same step (identical inputs, more than slots).
                while not (self._inbox or self._commands or self._wake or self._stopping or self.busy
                           or self._waiting or self._suspended):  # fmt: skip
                    self._lock.wait()
                if self._stopping:
                    break
                self._waiting.extend(self._inbox)
                self._inbox.clear()
                self._model.clear_abort()  # whoever asked is in the waiting line now
                commands, self._commands = self._commands, []
                self._wake = False
            for command in commands:
                command()
            try:
                self._drop_cancelled()
                self._admit()
                self._step()
            except Exception as exc:  # a bug must not kill the engine: fail what was running
                log.exception("batcher step failed")
                self._fail_all(EngineFailed(f"engine step failed: {type(exc).__name__}"))
            self._flush()
        self._fail_all(EngineFailed("engine is shutting down"))
        for seq in [*self._suspended, *self._waiting]:
            self._release_adapters(seq)
            self._outbox.append((seq, Delta(error=EngineFailed("engine is shutting down"))))
        self._flush()

    def _calibrate(self) -> None:
        try:
            cost = calibrate(self._time_rows, self._settings.draft_max)
        except LlamafleetError as exc:  # e.g. a model that only embeds: serve it, without drafts
            log.warning("speculative decoding is off: measuring a decode step failed (%s)", exc)
            self._model.clear_seq(0)
            return
        measured = ", ".join(f"{rows}: {seconds * 1000:.1f}" for rows, seconds in cost.points)
        draft = self._draft_model
        if draft is not None:
            try:
                self._draft_cost = calibrate(lambda rows: _time_rows(draft.model, rows), self._settings.slots)
            except LlamafleetError as exc:
                log.warning("speculative decoding is off: measuring a draft model step failed (%s)", exc)
                draft.forget(0)
                return
            measured += "; the draft model's " + ", ".join(
                f"{rows}: {seconds * 1000:.1f}" for rows, seconds in self._draft_cost.points
            )
        self._cost = cost
        log.info(
            "speculative decoding (%s): ms per decode step by rows %s", self._settings.speculative, measured
        )

    def _time_rows(self, rows: int) -> float:
        return _time_rows(self._model, rows)

    def _flush(self) -> None:
        if self._outbox:
            self._post(self._outbox)
            self._outbox = []
        self._metrics.busy_slots.set(self.busy)
        self._metrics.queue_depth.set(self._queued)
        self._metrics.suspended.set(len(self._suspended))
        used = sum(len(s.cached) for s in self._slots)
        self._metrics.kv_cells_used.set(used)
        with self._lock:  # submitted since this step began: not moved into the line yet
            waiting = [*self._inbox, *self._waiting, *self._suspended]
        self.load = ServingLoad(
            running=self.busy,
            waiting=self._queued + len(self._suspended),
            kv_cells_used=used,
            kv_cells=self._model.n_ctx_seq * self._settings.slots,
            waiting_adapters=tuple(name for seq in waiting for name, _ in seq.adapters),
            prompt_cache_bytes=self._host_cache.bytes,
        )

    def _dequeued(self, n: int = 1) -> None:
        with self._lock:
            self._queued -= n

    def _release_adapters(self, seq: Sequence) -> None:
        """A sequence is done with the batcher (finished, failed, or cancelled while waiting)."""
        if seq.adapters:
            self._adapters.release(seq.adapters)

    def _drop_cancelled(self) -> None:
        for slot in self._slots:
            if slot.seq is not None and slot.seq.cancelled:
                self._finish(slot, Delta(), notify=False)
        for seq in [s for s in self._suspended if s.cancelled]:
            self._suspended.remove(seq)
            self._drop_suspended(seq)
        dropped = [s for s in self._waiting if s.cancelled]
        if dropped:
            for seq in dropped:
                self._release_adapters(seq)
            self._dequeued(len(dropped))
            self._waiting = collections.deque(s for s in self._waiting if not s.cancelled)

    def _admit(self) -> None:
        # Slots copied from and into this round: llama.cpp copies at the next decode, so a donor must not
        # be overwritten and a copy's target not saved (its cells are not there yet) before then.
        donors: set[int] = set()
        copied: set[int] = set()
        while self._waiting or self._suspended:
            free = [s for s in self._slots if s.seq is None and s.id not in donors]
            if not free:
                if self._waiting and self._preempt(copied):
                    continue
                return
            if self._suspended and not (self._waiting and self._waiting[0].preempts):
                suspended = self._suspended.popleft()
                try:
                    self._resume(suspended, free)  # before new requests, after preempting ones
                except Exception:  # as for a new request: fail it, never lose it
                    log.exception("could not resume request %s", suspended.request_id)
                    self._release_adapters(suspended)
                    self._outbox.append(
                        (suspended, Delta(error=EngineFailed("the engine could not resume this request")))
                    )
                continue
            seq = self._waiting.popleft()
            self._dequeued()
            try:
                slot = self._place(seq, free, donors, copied)
            except Exception:  # a bug must fail this request, never lose it (its client would wait forever)
                log.exception("could not start request %s", seq.request_id)
                self._release_adapters(seq)
                self._outbox.append(
                    (seq, Delta(error=EngineFailed("the engine could not start this request")))
                )
                continue
            slot.seq = seq
            seq.admitted_at = time.monotonic()
            self._metrics.prompt_tokens.inc(len(seq.prompt))

    def _place(self, seq: Sequence, free: list[Slot], donors: set[int], copied: set[int]) -> Slot:
        """The slot ``seq`` starts in, its cells made ready (a cleared slot, or a prefix kept, copied or
        restored). On an error the slot chosen is cleared, so no half-made state is reused."""
        slot: Slot | None = None
        try:
            if seq.kind == "embed":
                slot = min(free, key=lambda s: (len(s.cached), s.last_used))
                self._evict(slot, 0)
                self._model.clear_seq(slot.id)
                slot.cached, slot.cache_adapters = [], ()
                return slot
            choice = choose_slot(self._slots, free, seq.prompt, seq.adapters)
            slot = choice.slot
            choice = self._with_saved(choice, seq)
            if choice.donor is not None:
                donors.add(choice.donor.id)
                copied.add(choice.slot.id)
            self._attach_generation(choice, seq)
            return choice.slot
        except Exception:
            if slot is not None:
                self._model.clear_seq(slot.id)
                slot.cached, slot.cache_adapters = [], ()
            raise

    def _preempt(self, copied: set[int]) -> bool:
        """Suspend a running request for a waiting one the gateway let preempt it (fair queuing across
        tenants: a tenant with nothing running gets a slot now instead of after a slot turn); the waiting
        one goes first in line. The victim is the most recently admitted running generation of the
        tenant named, its cells saved to host memory and restored, exactly, when a slot frees."""
        if len(self._suspended) >= len(self._slots):
            return False
        for seq in self._waiting:
            if not seq.preempts or seq.kind != "generate":
                continue
            victims = [s for s in self._slots if s.seq is not None and s.seq.kind == "generate"
                       and s.seq.tenant == seq.preempts != seq.tenant and s.id not in copied]  # fmt: skip
            if not victims:
                continue
            slot = max(victims, key=lambda s: s.seq.admitted_at if s.seq else 0.0)
            victim = slot.seq
            assert victim is not None
            data = self._model.save_seq(slot.id)
            if not data:
                return False
            victim.suspended = SavedState(list(slot.cached), slot.cache_adapters, slot.prompt_tokens, data)
            self._model.clear_seq(slot.id)
            slot.cached, slot.cache_adapters, slot.seq = [], (), None
            self._suspended.append(victim)
            self._waiting.remove(seq)
            self._waiting.appendleft(seq)
            self._metrics.preempted.inc()
            log.debug("request %s (tenant %s) suspended for %s (tenant %s)",
                      victim.request_id, victim.tenant, seq.request_id, seq.tenant)  # fmt: skip
            return True
        return False

    def _resume(self, seq: Sequence, free: list[Slot]) -> None:
        """Give a suspended request a slot again, its cells restored as they were."""
        saved = seq.suspended
        assert saved is not None
        seq.suspended = None
        slot = choose_slot(self._slots, free, saved.tokens, saved.adapters).slot
        self._evict(slot, 0)
        if not self._model.restore_seq(slot.id, saved.data):
            slot.cached, slot.cache_adapters = [], ()
            failed = EngineFailed("the engine could not restore a suspended request's cells")
            self._drop_suspended(seq, failed)
            return
        slot.cached, slot.cache_adapters = saved.tokens, saved.adapters
        slot.prompt_tokens = saved.prompt_tokens
        slot.seq = seq

    def _drop_suspended(self, seq: Sequence, error: LlamafleetError | None = None) -> None:
        if seq.chain is not None:
            seq.chain.free()
            seq.chain = None
        self._release_adapters(seq)
        seq.suspended = None
        if error is not None:
            self._outbox.append((seq, Delta(error=error)))

    def _with_saved(self, choice: SlotChoice, seq: Sequence) -> SlotChoice:
        """``choice``, or its slot with a saved state restored when one holds more of the prompt
        (by at least MIN_SAVED tokens) than any slot does."""
        cache = self._host_cache
        if not cache.enabled:
            return choice
        saved, shared = cache.best(seq.prompt, seq.adapters)
        reuse = min(shared, max(len(seq.prompt) - 1, 0))
        if saved is None or reuse < choice.reuse + MIN_SAVED:
            return choice
        slot = choice.slot
        cache.touch(saved)  # the newest now: saving the slot's cells next must not push it out first
        self._evict(slot, 0)
        if not self._model.restore_seq(slot.id, saved.data):
            log.warning("llama.cpp refused a saved prompt state of %d tokens; prefilling instead",
                        len(saved.tokens))  # fmt: skip
            cache.remove(saved)
            slot.cached, slot.cache_adapters = [], ()
            return SlotChoice(slot, None, 0)
        slot.cached, slot.cache_adapters = saved.tokens, saved.adapters
        slot.prompt_tokens = saved.prompt_tokens
        self._metrics.prompt_cache_restored_tokens.inc(reuse)
        return SlotChoice(slot, None, reuse)

    def _evict(self, slot: Slot, keep: int) -> None:
        """Save ``slot``'s cells to the host cache before all but ``keep`` of them are destroyed, when
        at least MIN_SAVED of the rest are held by no other slot and by no saved state."""
        cache = self._host_cache
        if not cache.enabled or len(slot.cached) - keep < MIN_SAVED:
            return
        held = max((common_prefix(slot.cached, o.cached) for o in self._slots
                    if o is not slot and o.cache_adapters == slot.cache_adapters), default=0)  # fmt: skip
        if len(slot.cached) - max(keep, held) < MIN_SAVED or cache.holds(slot.cached, slot.cache_adapters):
            return
        data = self._model.save_seq(slot.id)
        if data and cache.save(SavedState(list(slot.cached), slot.cache_adapters, slot.prompt_tokens, data)):
            self._metrics.prompt_cache_saved.inc()
        self._metrics.prompt_cache_host_bytes.set(cache.bytes)

    def _attach_generation(self, choice: SlotChoice, seq: Sequence) -> None:
        slot, donor, n_keep = choice.slot, choice.donor, choice.reuse
        if donor is not None:
            self._evict(slot, 0)
            self._model.copy_seq(donor.id, slot.id)  # done by llama.cpp before the next decode
            slot.cached = donor.cached  # cut to n_keep below
            self._metrics.prompt_cache_copies.inc()
        else:
            self._evict(slot, n_keep)
        if not self._model.keep_prefix(slot.id, n_keep):
            self._model.clear_seq(slot.id)
            n_keep = 0
        slot.cached = slot.cached[:n_keep]
        slot.cache_adapters = seq.adapters
        slot.prompt_tokens = len(seq.prompt)
        seq.pending = seq.prompt[n_keep:]
        seq.cached_tokens = n_keep
        seq.chain = SamplerChain(seq.sampling, self._model.n_vocab, self._model.vocab)
        seq.chain.accept(seq.prompt)
        seq.text = TextStream(seq.stops)
        seq.drafter = None
        if self._cost is not None and seq.speculative:  # speculating, and measured
            seq.drafter = (
                DraftStats(self._acceptance, explore=False)
                if self._draft_model is not None
                else NgramDrafter(seq.prompt, self._settings.draft_max, self._acceptance, seq.predicted)
            )
        self._metrics.prompt_cache_hit_tokens.inc(n_keep)

    def _step(self) -> None:
        groups: dict[Any, list[Slot]] = {}
        for slot in self._slots:
            if slot.seq is not None:
                groups.setdefault(slot.seq.group, []).append(slot)
        if not groups:
            return
        keys = sorted(groups, key=repr)
        key = keys[self._turn % len(keys)]
        self._turn += 1
        members = sorted(groups[key], key=lambda s: s.seq.number if s.seq else 0)
        started = time.perf_counter()
        if key[0] == "embed":
            self._embed_step(members)
        else:
            self._generation_step(members, key[1])
        self._metrics.step_seconds.observe(time.perf_counter() - started)

    def _generation_step(self, members: list[Slot], adapters: Any) -> None:
        batch = self._model.batch
        # Plan first: every generating sequence advances by its sampled token (and a draft of the
        # tokens likely to follow it, when it speculates), then prompt chunks share the prefill
        # budget, oldest request first.
        plan: dict[int, tuple[list[int], bool]] = {}  # slot id → (tokens, logits wanted)
        drafts: dict[int, list[int]] = {}
        generating = [s for s in members if s.seq is not None and s.seq.next_token is not None]
        room = batch.capacity - len(generating)  # the whole buffer: it is cleared below
        expected, rows = float(len(generating)), float(len(generating))  # the step's expected tokens, rows
        drafted = (
            self._model_drafts(generating, room) if self._draft_model is not None and generating else None
        )
        for slot in generating:
            seq = slot.seq
            assert seq is not None
            assert seq.next_token is not None
            if drafted is not None:
                draft = drafted.get(slot.id, [])
            else:
                draft = self._draft(slot, seq, room, expected, rows) if seq.drafter is not None else []
            if draft:
                assert seq.drafter is not None
                room -= len(draft)
                rows += len(draft)
                expected += expected_extra(seq.drafter.acceptance, len(draft))
            drafts[slot.id] = draft
            plan[slot.id] = ([seq.next_token, *draft], True)
            seq.next_token = None
        if generating and not any(drafts.values()):
            self._acceptance.idle()
        budget = min(room, self._settings.prefill_chunk)
        for slot in members:
            seq = slot.seq
            assert seq is not None
            if seq.pending and budget > 0:
                chunk, seq.pending = seq.pending[:budget], seq.pending[budget:]
                plan[slot.id] = (chunk, not seq.pending)
                budget -= len(chunk)
        # Then write rows in increasing slot (sequence id) order: with one KV stream per slot,
        # llama.cpp puts only consecutive, increasing sequence ids into one micro-batch, so any
        # other order splits a step into several graph computations.
        batch.clear()
        outputs: list[tuple[Slot, int]] = []
        for slot in sorted(members, key=lambda s: s.id):
            if slot.id not in plan:
                continue
            tokens, wants_logits = plan[slot.id]
            logits = "all" if drafts.get(slot.id) else "last" if wants_logits else "none"
            index = batch.add(slot.id, tokens, len(slot.cached), logits)
            slot.cached.extend(tokens)
            if wants_logits:
                outputs.append((slot, index - len(drafts.get(slot.id, ()))))
        if batch.n == 0:
            return
        # A step may be stopped for a request that preempts (see submit) unless a sequence in it keeps
        # a drafter's history, which a step taken back would leave a token ahead.
        self._model.set_abortable(all(s.seq is None or s.seq.drafter is None for s in members))
        failed = self._decode(adapters, embeddings=False)
        if isinstance(failed, Aborted):
            self._take_back(members, plan, {s.id for s in generating})
            return
        if failed is not None:
            for slot in members:
                self._forget(slot)
                self._finish(slot, Delta(error=failed))
            return
        emitted = 0
        for slot, index in outputs:
            draft = drafts.get(slot.id, [])
            emitted += self._verify(slot, index, draft) if draft else self._after_logits(slot, index)
        self._count_tokens(emitted)

    def _take_back(
        self, members: list[Slot], plan: dict[int, tuple[list[int], bool]], generating: set[int]
    ) -> None:
        """Undo a step stopped before it finished: every planned token out of the cells (llama.cpp kept
        the micro-batches it finished) and back to its sequence, to be decoded in the next step."""
        for slot in members:
            seq = slot.seq
            if seq is None or slot.id not in plan:
                continue
            tokens = plan[slot.id][0]
            del slot.cached[len(slot.cached) - len(tokens) :]
            if not self._model.cut(slot.id, len(slot.cached)):
                self._forget(slot)
                self._finish(
                    slot, Delta(error=EngineFailed("the KV cache could not take back a stopped step"))
                )
                continue
            if slot.id in generating:
                seq.next_token = tokens[0]
            else:
                seq.pending = tokens + seq.pending
        self._metrics.steps_stopped.inc()

    def _draft_limit(self, slot: Slot, seq: Sequence, room: int) -> int:
        """The most draft tokens worth verifying after ``seq``'s sampled one: within the batch's room,
        the slot's cells and the request's max_tokens (a token past those would be thrown away)."""
        limit: int = min(room, self._model.n_ctx_seq - len(slot.cached) - 1, self._settings.draft_max)
        if seq.max_tokens is not None:
            limit = min(limit, seq.max_tokens - seq.generated - 1)
        return limit

    def _wanted(self, proposal: list[int], drafter: DraftStats, tokens: float, rows: float,
                spent: float = 0.0, per_token: float = 0.0, fixed: float = 0.0) -> int:  # fmt: skip
        """How much of a proposal to verify: what raises the step's expected tokens per second
        (``worth_verifying``), at least --draft-min, and one token while the sequence explores."""
        assert self._cost is not None
        keep = worth_verifying(
            proposal, drafter.acceptance, self._cost, tokens, rows, spent, per_token, fixed
        )
        keep = max(keep, min(self._settings.draft_min, len(proposal)))
        return keep or min(int(drafter.exploring), len(proposal))

    def _draft(self, slot: Slot, seq: Sequence, room: int, tokens: float, rows: float) -> list[int]:
        """The n-gram drafter's tokens to verify after ``seq``'s sampled one."""
        drafter = seq.drafter
        assert isinstance(drafter, NgramDrafter)
        assert seq.next_token is not None
        drafter.extend([*slot.cached[len(drafter) :], seq.next_token])
        proposal = drafter.draft(self._draft_limit(slot, seq, room))
        draft = proposal[: self._wanted(proposal, drafter, tokens, rows)]
        if draft:
            self._metrics.draft_tokens.inc(len(draft))
        return draft

    def _model_drafts(self, generating: list[Slot], room: int) -> dict[int, list[int]]:
        """The draft model's tokens for every generating sequence that drafts, drafted together: each
        sequence's length is chosen first (as for n-gram drafts, with the draft model's time counted),
        then the draft model decodes them in batched rounds (``DraftModel.draft``)."""
        assert self._draft_model is not None
        assert self._draft_cost is not None
        per_token = self._draft_cost.of(len(generating)) / len(generating)  # a round's rows are shared
        expected = rows = float(len(generating))
        spent = 0.0
        wants: dict[int, tuple[list[int], int]] = {}
        for slot in generating:
            seq = slot.seq
            assert seq is not None
            assert seq.next_token is not None
            if seq.drafter is None:
                continue
            limit = self._draft_limit(slot, seq, room)
            behind = self._draft_model.behind(slot.id, len(slot.cached) + 1)
            catch_up = self._draft_cost.of(behind) if behind > 1 else 0.0  # a prompt the draft lacks
            k = self._wanted([0] * max(0, limit), seq.drafter, expected, rows, spent, per_token, catch_up)
            if k > 0:
                wants[slot.id] = ([*slot.cached, seq.next_token], k)
                room -= k
                rows += k
                expected += expected_extra(seq.drafter.acceptance, k)
                spent += per_token * k + catch_up
        drafts = self._draft_model.draft(wants) if wants else {}
        self._metrics.draft_tokens.inc(sum(len(d) for d in drafts.values()))
        for slot in generating:
            if slot.id in wants and not drafts.get(slot.id) and slot.seq is not None and slot.seq.drafter:
                # The draft model was not sure of even one token: its time bought nothing, as a draft
                # rejected at its first token. Counted so, or a sequence still exploring would ask for a
                # draft (and pay a draft step) at every step of an answer the draft model cannot guess.
                slot.seq.drafter.accepted(1, 0)
        return drafts

    def _verify(self, slot: Slot, first: int, draft: list[int]) -> int:
        """Sample the rows of a sequence's sampled token and its draft in order, keeping draft tokens
        while each equals what was sampled before it; cut the cells of the rest. Tokens emitted."""
        seq = slot.seq
        assert seq is not None
        assert seq.drafter is not None
        valid = len(slot.cached) - len(draft)  # cells through the sampled token, which is always kept
        del slot.cached[valid:]  # re-added as they are accepted: _after_logits reads the length
        kept = emitted = 0
        for row, drafted in enumerate([*draft, None]):
            emitted += self._after_logits(slot, first + row)
            if slot.seq is None or drafted is None or seq.next_token != drafted:
                break
            seq.next_token = None  # it is in the cells already: the next row's logits follow it
            slot.cached.append(drafted)
            kept += 1
        self._metrics.accepted_tokens.inc(kept)
        self._metrics.speculative_step_tokens.observe(emitted)
        seq.drafter.accepted(len(draft), kept)
        if kept < len(draft) and not self._model.cut(slot.id, valid + kept):
            self._forget(slot)
            if slot.seq is not None:
                self._finish(slot, Delta(error=EngineFailed("the KV cache could not drop a rejected draft")))
        return emitted

    def _after_logits(self, slot: Slot, index: int) -> int:
        """Sample one row for ``slot``'s sequence: finish it, or hold the token for the next step.
        Tokens emitted (0 when the row ended generation with an end-of-generation token)."""
        seq = slot.seq
        assert seq is not None
        assert seq.chain is not None
        assert seq.text is not None
        token = seq.chain.sample(self._model.ctx, index)
        seq.first_token_at = seq.first_token_at or time.monotonic()
        if self._model.is_eog(token):
            self._finish(slot, Delta(finish_reason="stop"))
            return 0
        if seq.top_logprobs is not None:
            row = logits_row(self._model.ctx, index, self._model.n_vocab)
            seq.held_logprobs.append(token_logprob(row, token, seq.top_logprobs, self._model.piece))
        seq.generated += 1
        text = seq.text.push(self._model.piece(token))
        if seq.text.stopped:
            self._finish(slot, Delta(text, "stop", stop_word=seq.text.matched))
        elif (seq.max_tokens is not None and seq.generated >= seq.max_tokens) or len(
            slot.cached
        ) >= self._model.n_ctx_seq:
            self._finish(slot, Delta(text + seq.text.flush(), "length"))
        else:
            seq.next_token = token
            if text:
                self._outbox.append((seq, Delta(text, logprobs=_take(seq.held_logprobs))))
        return 1

    def _embed_step(self, members: list[Slot]) -> None:
        """Embed inputs of one token length together (the oldest input's length).

        Pooling needs each sequence whole in one micro-batch, and llama.cpp's split for
        per-slot KV streams takes the same number of tokens from every sequence of a
        micro-batch; equal lengths within n_ubatch keep every sequence whole.
        """
        model, batch = self._model, self._model.batch
        batch.clear()
        length = len(members[0].seq.prompt) if members[0].seq else 0
        fits = max(1, model.n_ubatch // max(1, length))
        taken = [s for s in members if s.seq is not None and len(s.seq.prompt) == length][:fits]
        for slot in sorted(taken, key=lambda s: s.id):
            assert slot.seq is not None
            batch.add(slot.id, slot.seq.prompt, 0, "all")
        failed = self._decode((), embeddings=True)
        assert not isinstance(failed, Aborted)  # embedding steps are never abortable
        for slot in taken:
            delta = Delta(error=failed) if failed is not None else self._pooled(slot.id)
            model.clear_seq(slot.id)  # embedding inputs are not worth a prompt cache
            self._finish(slot, delta)

    def _pooled(self, seq_id: int) -> Delta:
        vector = self._model.embedding(seq_id)
        if self._model.pooling == "rank":  # a reranker's scores, as they are
            return Delta(finish_reason="stop", embedding=vector.tolist())
        norm = float(np.linalg.norm(vector))
        return Delta(finish_reason="stop", embedding=(vector / norm if norm > 0 else vector).tolist())

    def _decode(self, adapters: AdapterKey, embeddings: bool) -> LlamafleetError | Aborted | None:
        """Decode the filled batch under this adapter set and output mode; the error if it failed,
        ABORTED if a preempting request stopped it."""
        self._adapters.bind(adapters)
        self._model.set_embeddings(embeddings)
        if embeddings:
            self._model.set_abortable(False)
        self._metrics.step_tokens.observe(self._model.batch.n)
        if self._watchdog is not None:
            self._watchdog.step_started()
        try:
            if not self._model.decode():
                return ABORTED
        except LlamafleetError as exc:
            return exc
        finally:
            if self._watchdog is not None:
                self._watchdog.step_finished()
        return None

    def _forget(self, slot: Slot) -> None:
        self._model.clear_seq(slot.id)
        slot.cached, slot.cache_adapters = [], ()

    def _finish(self, slot: Slot, delta: Delta, notify: bool = True) -> None:
        seq = slot.seq
        assert seq is not None
        if seq.chain is not None:
            seq.chain.free()
            seq.chain = None
        self._release_adapters(seq)
        seq.next_token = None  # sampled but never decoded: not in the cache
        self._uses += 1
        slot.last_used = self._uses
        slot.seq = None
        if notify:
            if delta.finish_reason is not None or delta.error is None:
                delta.usage = seq.usage()
            delta.logprobs = _take(seq.held_logprobs)
            self._outbox.append((seq, delta))

    def _fail_all(self, error: LlamafleetError) -> None:
        for slot in self._slots:
            if slot.seq is not None:
                self._forget(slot)
                self._finish(slot, Delta(error=error))

    def _count_tokens(self, n: int) -> None:
        self._metrics.generated_tokens.inc(n)
        now = time.monotonic()
        self._rate.append((now, n))
        while self._rate and now - self._rate[0][0] > 10.0:
            self._rate.popleft()
        span = now - self._rate[0][0]
        if span > 0:
            self._metrics.tokens_per_second.set(sum(k for _, k in self._rate) / span)


def _time_rows(model: NativeModel, rows: int) -> float:
    """Seconds of one decode step of ``rows`` rows (slot 0, before any request; cells cleared)."""
    batch = model.batch
    batch.clear()
    batch.add(0, [max(0, model.bos)] * rows, 0, "last")
    started = time.perf_counter()
    model.decode()
    elapsed = time.perf_counter() - started
    model.clear_seq(0)
    return elapsed


def _take(held: list[TokenLogprob]) -> list[TokenLogprob]:
    taken = held[:]
    held.clear()
    return taken
