"""The n-gram drafter of speculative decoding: what it proposes, and how its draft length adapts."""

from __future__ import annotations

from nodeagent.engine.speculative import Acceptance, NgramDrafter, StepCost, expected_extra, worth_verifying


def test_the_tokens_after_the_latest_earlier_occurrence_of_the_suffix_are_proposed() -> None:
    drafter = NgramDrafter([1, 2, 3, 4, 5, 9, 9, 1, 2, 3, 7, 8, 1, 2, 3], draft_max=8)
    assert drafter.draft(8) == [7, 8, 1, 2, 3]  # [1, 2, 3] last seen before 7, 8, not before 4, 5
    assert drafter.draft(2) == [7, 8]


def test_the_longest_matching_suffix_wins() -> None:
    # [5, 1, 2] occurred before 6; only [1, 2] occurred later (before 7).
    drafter = NgramDrafter([5, 1, 2, 6, 0, 1, 2, 7, 0, 5, 1, 2], draft_max=8)
    assert drafter.draft(1) == [6]


def test_nothing_is_proposed_without_an_earlier_occurrence() -> None:
    assert NgramDrafter([1, 2, 3, 4, 5, 6], draft_max=8).draft(8) == []
    assert NgramDrafter([1, 2, 3, 4, 5, 6, 3], draft_max=8).draft(8) == []  # one token is too little
    assert NgramDrafter([1, 2, 1, 2], draft_max=8).draft(0) == []


def test_the_index_follows_the_context_as_it_grows() -> None:
    drafter = NgramDrafter([4, 5, 6, 7], draft_max=8)
    assert drafter.draft(8) == []
    drafter.extend([1, 4, 5])
    assert len(drafter) == 7
    assert drafter.draft(8) == [6, 7, 1, 4, 5]


def test_acceptance_is_learnt_from_this_sequence_after_the_engines_prior() -> None:
    engine = Acceptance()
    drafter = NgramDrafter([1, 2, 3], draft_max=8, engine=engine)
    assert drafter.acceptance == engine.rate == 0.75  # nothing known yet: the optimistic start
    drafter.accepted(8, 8)
    drafter.accepted(4, 4)
    assert drafter.acceptance > 0.95  # twelve kept, no miss
    for _ in range(6):
        drafter.accepted(4, 0)
    assert drafter.acceptance < 0.7
    drafter.accepted(0, 0)  # nothing drafted: nothing learnt
    assert engine.rate < 0.75  # the engine learnt too: new sequences start from it


def test_an_engine_whose_drafts_fail_tries_again_after_a_while() -> None:
    engine = Acceptance()
    for _ in range(200):
        engine.add(0, True)
    assert engine.rate < 0.1
    for _ in range(2000):  # steps that verified nothing (20-40 s of decoding)
        engine.idle()
    assert engine.rate > 0.7


def test_a_draft_is_verified_as_far_as_it_pays() -> None:
    cpu = StepCost(((1, 0.0128), (2, 0.0225), (3, 0.0304), (5, 0.039), (9, 0.062)))  # SmolLM2, 2 cores
    draft = list(range(8))
    assert worth_verifying(draft, 0.3, cpu, tokens=1, rows=1) == 0  # rarely accepted: never pays
    assert 2 <= worth_verifying(draft, 0.9, cpu, tokens=1, rows=1) <= 6  # pays, but not all 8 rows
    gpu = StepCost(((1, 0.010), (9, 0.0104)))  # rows nearly free
    assert worth_verifying(draft, 0.6, gpu, tokens=1, rows=1) == 8
    # In a busy step (8 sequences already) extra rows slow everyone: less of the draft pays.
    alone = worth_verifying(draft, 0.9, cpu, tokens=1, rows=1)
    assert worth_verifying(draft, 0.9, cpu, tokens=8, rows=8) < alone
    assert worth_verifying([], 1.0, gpu, tokens=1, rows=1) == 0
    assert expected_extra(0.5, 3) == 0.5 + 0.25 + 0.125


def test_a_draft_models_own_time_counts_against_its_draft() -> None:
    gpu = StepCost(((1, 0.010), (9, 0.0104)))
    draft = list(range(8))
    assert worth_verifying(draft, 0.8, gpu, tokens=1, rows=1, per_token=0.001) > 0  # a small, fast draft pays
    assert worth_verifying(draft, 0.8, gpu, tokens=1, rows=1, per_token=0.010) == 0  # one as slow: never
    # Catching the draft model up with a prompt it lacks costs a prefill: not worth it for a few tokens.
    assert worth_verifying(draft, 0.8, gpu, tokens=1, rows=1, per_token=0.001, fixed=0.2) == 0


def test_a_step_costs_what_was_measured_between_and_beyond_the_points() -> None:
    cost = StepCost(((1, 0.010), (2, 0.018), (5, 0.030)))
    assert cost.of(1) == 0.010
    assert abs(cost.of(1.5) - 0.014) < 1e-12
    assert abs(cost.of(3.5) - 0.024) < 1e-12
    assert abs(cost.of(8) - 0.042) < 1e-12  # past the last point: the last segment's slope


def test_a_copy_in_progress_goes_on_from_its_source_not_from_the_latest_repeat() -> None:
    # Lines longer than the longest n-gram: [7, 10, 11, 12] starts every one of them.
    source = [7, 10, 11, 12, 1, 9, 7, 10, 11, 12, 2, 9, 7, 10, 11, 12, 3, 9]
    drafter = NgramDrafter([*source, 0, 7, 10, 11, 12, 1], draft_max=4)  # copying line one
    assert drafter.draft(4) == [9, 7, 10, 11]
    drafter.accepted(4, 4)
    drafter.extend([9, 7, 10, 11, 12])  # all kept, and the sampled 12 is the source's next token too
    # Followed from the source: line two. The index alone would take the latest [7, 10, 11, 12],
    # the answer's own line one, and guess 1 again.
    assert drafter.draft(4) == [2, 9, 7, 10]
    drafter.accepted(4, 0)
    drafter.extend([5])  # the model wrote something else: the copy is off, back to the index
    assert drafter.draft(4) == []


def test_a_sequence_explores_its_first_drafts_then_goes_by_its_estimate() -> None:
    drafter = NgramDrafter([1, 2, 3], draft_max=8)
    for _ in range(4):
        assert drafter.exploring
        drafter.accepted(1, 1)
    assert not drafter.exploring
    assert drafter.acceptance > 0.8  # four of four kept: now it drafts on its own merit
