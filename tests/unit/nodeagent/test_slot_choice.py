"""Which slot a prompt takes and whose cells it copies (nodeagent/engine/slot_choice.py)."""

from __future__ import annotations

from nodeagent.engine.sequence import Slot
from nodeagent.engine.slot_choice import COPY_MIN_TOKENS, choose_slot

SYSTEM = list(range(1000, 1100))  # a 100-token system prompt


def slot(
    sid: int,
    cached: list[int],
    last_used: int = 0,
    adapters: tuple[tuple[str, float], ...] = (),
    prompt_tokens: int | None = None,
) -> Slot:
    """A slot whose cells hold ``cached``: a prompt of ``prompt_tokens`` (default: all) and its answer."""
    prompt = len(cached) if prompt_tokens is None else prompt_tokens
    return Slot(sid, cached=list(cached), cache_adapters=adapters, last_used=last_used, prompt_tokens=prompt)


def test_a_conversation_coming_back_takes_its_own_slot_as_it_is() -> None:
    turn_one = SYSTEM + list(range(200)) + [7, 8, 9]  # the cache ends with the answer's last tokens
    slots = [slot(0, []), slot(1, turn_one, last_used=1, prompt_tokens=len(SYSTEM) + 200)]
    prompt = SYSTEM + list(range(200)) + [7, 8] + list(range(300, 320))  # re-rendered answer, new question
    choice = choose_slot(slots, slots, prompt, ())
    assert (choice.slot.id, choice.donor, choice.reuse) == (1, None, len(SYSTEM) + 202)


def test_a_newcomer_under_a_known_system_prompt_copies_it_into_an_empty_slot() -> None:
    sibling = SYSTEM + list(range(500))
    slots = [slot(0, sibling, last_used=3), slot(1, [])]
    choice = choose_slot(slots, slots, SYSTEM + list(range(600, 700)), ())
    assert (choice.slot.id, choice.donor, choice.reuse) == (1, slots[0], len(SYSTEM))


def test_without_an_empty_slot_the_least_recently_used_of_equal_worth_is_taken() -> None:
    slots = [slot(0, [5] * 400, last_used=9), slot(1, [6] * 400, last_used=2), slot(2, [7] * 400, 5)]
    choice = choose_slot(slots, slots, [2] * 50, ())
    assert (choice.slot.id, choice.donor) == (1, None)


def test_more_system_prompts_than_slots_each_new_question_takes_its_prompts_own_slot() -> None:
    # Four system prompts, each cached once with a one-shot question and answer after it.
    prompts = [list(range(1000 * k, 1000 * k + 500)) for k in range(1, 5)]
    slots = [slot(k, prompts[k] + [k] * 40, last_used=k, prompt_tokens=532) for k in range(4)]
    choice = choose_slot(slots, slots, prompts[3] + [9] * 32, ())
    # In place: the 40 tokens of its last question are lost, not another prompt's only copy.
    assert (choice.slot.id, choice.donor, choice.reuse) == (3, None, 500)


def test_a_copy_is_given_up_before_an_only_copy_and_a_long_conversation_before_neither() -> None:
    conversation = slot(0, SYSTEM + [1] * 600, last_used=1, prompt_tokens=650)  # between turns
    only_copy = slot(1, list(range(2000, 2500)), last_used=5)
    duplicate = slot(2, list(range(2000, 2500)) + [3] * 20, last_used=9)  # holds only_copy's prefix too
    slots = [conversation, only_copy, duplicate]
    choice = choose_slot(slots, slots, SYSTEM + [2] * 30, ())
    # only_copy's 500 cells are also in slot 2: taking slot 1 destroys nothing.
    assert (choice.slot.id, choice.donor) == (1, conversation)


def test_the_donor_may_be_busy_and_the_taken_slot_may_keep_its_own_prefix() -> None:
    busy = slot(0, SYSTEM + [1] * 300)
    lru = slot(1, SYSTEM[:50] + [3] * 300, last_used=1)
    recent = slot(2, [4] * 400, last_used=8)  # worth more: its 400 cells would be lost
    prompt = SYSTEM + [2] * 40
    assert choose_slot([busy, lru, recent], [lru, recent], prompt, ()).donor is busy
    # Its own 50 tokens are within COPY_MIN_TOKENS of the donor's: keep them in place, no copy.
    near = slot(1, SYSTEM[: len(SYSTEM) - COPY_MIN_TOKENS + 1] + [3] * 300, last_used=1)
    choice = choose_slot([busy, near, recent], [near, recent], prompt, ())
    assert (choice.slot.id, choice.donor, choice.reuse) == (1, None, len(SYSTEM) - COPY_MIN_TOKENS + 1)


def test_cells_computed_under_other_adapters_are_neither_reused_nor_copied() -> None:
    tuned = slot(0, SYSTEM + [1] * 300, adapters=(("sql", 1.0),))
    slots = [tuned, slot(1, [])]
    choice = choose_slot(slots, slots, SYSTEM + [2] * 10, ())
    assert (choice.slot.id, choice.donor, choice.reuse) == (1, None, 0)


def test_at_least_one_prompt_token_is_left_to_decode() -> None:
    slots = [slot(0, SYSTEM)]
    assert choose_slot(slots, slots, list(SYSTEM), ()).reuse == len(SYSTEM) - 1


def test_a_short_sibling_conversation_is_not_mistaken_for_the_prompts_own() -> None:
    # Its cache differs from the prompt in a few tokens only, but past the system prompt: its question.
    sibling = slot(0, SYSTEM + [1] * 10 + [9] * 12, last_used=1, prompt_tokens=len(SYSTEM) + 10)
    slots = [sibling, slot(1, [])]
    choice = choose_slot(slots, slots, SYSTEM + [2] * 10, ())
    assert (choice.slot.id, choice.donor) == (1, sibling)


def test_a_newcomer_joins_the_busy_slots_run_so_a_step_stays_one_micro_batch() -> None:
    # Slots 3 and 4 are busy; every free slot holds a copy of one prefix (nothing is lost taking any):
    # 0 is the least recently used, 5 extends the run, 8 is empty but alone.
    slots = [slot(i, [7] * 50, last_used=i) for i in range(8)] + [slot(8, [])]
    free = [s for s in slots if s.id not in (3, 4)]
    assert choose_slot(slots, free, [99] * 20, ()).slot.id in (2, 5)
    # Joining two runs beats extending one.
    free = [s for s in slots if s.id not in (3, 5)]
    assert choose_slot(slots, free, [99] * 20, ()).slot.id == 4
    # Nothing busy: an empty slot before any cache is given up.
    assert choose_slot(slots, slots, [99] * 20, ()).slot.id == 8
    # An only copy is kept even at the cost of a second micro-batch.
    unique = [slot(i, [i] * 50, last_used=i) for i in range(8)] + [slot(8, [])]
    free = [s for s in unique if s.id not in (3, 4)]
    assert choose_slot(unique, free, [99] * 20, ()).slot.id == 8
