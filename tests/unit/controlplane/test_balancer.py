"""The balancer without engines: request keys, the bounded-load ring, policies, queueing, backpressure."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import pytest
from prometheus_client import CollectorRegistry

from controlplane.domain import Endpoint, ModelRoute, RoutingTable
from controlplane.gateway.balancer.balancer import Balancer
from controlplane.gateway.balancer.hashring import HashRing
from controlplane.gateway.balancer.policies import Placements
from controlplane.gateway.balancer.request_keys import BLOCK_CHARS, MAX_BLOCKS, RequestKeys, request_keys
from controlplane.gateway.balancer.state import InProcessState
from controlplane.gateway.metrics import GatewayMetrics
from llamafleet.core.errors import ColdStartTimeout, Overloaded, QueueTimeout
from tests.support.block_holding import check_block_holding

NO_KEYS = RequestKeys()


def chat(*turns: tuple[str, str], user: str | None = None) -> bytes:
    body: dict[str, object] = {"model": "m", "messages": [{"role": r, "content": c} for r, c in turns]}
    if user:
        body["user"] = user
    return json.dumps(body).encode()


def test_a_prompt_is_named_block_by_block_so_prompts_share_exactly_their_common_leading_blocks() -> None:
    system = ("system", "You are the support desk of a large bank. " * 100)  # 4,300 characters
    first = request_keys(chat(system, ("user", "Tell me about Paris.")), {})
    later = request_keys(
        chat(system, ("user", "Tell me about Paris."), ("assistant", "It is..." * 60), ("user", "And Lyon?")),
        {},
    )
    other = request_keys(chat(system, ("user", "Tell me about Rome.")), {})
    whole = (len("system\x1f") + 4300) // BLOCK_CHARS  # the blocks wholly inside the system prompt
    assert len(first.blocks) == whole + 1  # and the last, partial one (the question)
    assert later.blocks[:whole] == first.blocks[:whole]
    assert other.blocks[:whole] == first.blocks[:whole]  # conversations share their system prompt…
    assert other.blocks[whole] != first.blocks[whole]  # …and differ from the block the question is in
    assert len(later.blocks) > len(first.blocks)  # a conversation's history adds blocks as it grows
    # A completion is its prompt's text; another model (or adapter) is another cache.
    doc = "A long document pasted ahead of the questions. " * 40
    q1 = request_keys(json.dumps({"model": "m", "prompt": doc + "Question one?"}).encode(), {})
    q2 = request_keys(json.dumps({"model": "m", "prompt": doc + "Question two?"}).encode(), {})
    q3 = request_keys(json.dumps({"model": "m:lora", "prompt": doc + "Question two?"}).encode(), {})
    shared = len(doc) // BLOCK_CHARS
    assert q1.blocks[:shared] == q2.blocks[:shared]
    assert q1.blocks[-1] != q2.blocks[-1]
    assert not set(q3.blocks) & set(q2.blocks)
    assert (
        len(request_keys(json.dumps({"model": "m", "prompt": "x" * 10**6}).encode(), {}).blocks) == MAX_BLOCKS
    )
    assert len(request_keys(json.dumps({"model": "m", "prompt": "hi"}).encode(), {}).blocks) == 1
    assert request_keys(b"not json", {}) == RequestKeys()
    assert request_keys(json.dumps({"model": "m"}).encode(), {}).blocks == ()


async def test_the_state_counts_the_leading_blocks_each_replica_holds() -> None:
    await check_block_holding(InProcessState())


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_the_state_forgets_what_expired_as_it_goes_not_only_at_its_cap() -> None:
    clock = Clock()
    state = InProcessState(clock)
    for i in range(500):  # an hour's worth of one-off prompts, in miniature
        await state.hold((f"b{i}",), "r1", ttl_s=60)
        await state.remember("session", f"s{i}", "r1", ttl_s=60)
        clock.now += 1
    assert state.remembered() == (61, 61)  # the last minute's (expired ones go as new ones come)
    assert await state.held(("b499",)) == {"r1": 1}
    assert await state.held(("b400",)) == {}  # expired
    await state.hold(("b450",), "r2", ttl_s=60)  # a use renews and moves it last
    clock.now += 45
    await state.hold(("b500",), "r1", ttl_s=60)
    assert await state.held(("b450",)) == {"r2": 1}  # r1's use of it expired, r2's renewed it
    assert state.remembered()[0] == 17  # b485..b499, b450, b500


def test_placements_count_only_live_units_and_drop_expired_ones() -> None:
    clock = Clock()
    placements = Placements(60, clock)
    for i in range(300):
        placements.place(f"u{i}", "a" if i % 3 else "b")
        clock.now += 1
    assert sum(placements.counts().values()) == 60
    placements.place("u299", "b")  # placed again elsewhere: counted once, where it is now
    assert placements.counts() == Counter({"a": 39, "b": 21})
    clock.now += 120
    assert placements.counts() == Counter()


def test_session_key_from_user_or_header() -> None:
    assert request_keys(chat(("user", "hi"), user="alice"), {}).session == "alice"
    assert request_keys(chat(("user", "hi"), user="alice"), {"x-session-id": "s-1"}).session == "s-1"


def test_the_ring_moves_few_keys_when_a_replica_joins() -> None:
    keys = [f"k{i}" for i in range(2000)]
    three = HashRing(["a", "b", "c"])
    four = HashRing(["a", "b", "c", "d"])
    owners3 = {k: three.walk(k)[0] for k in keys}
    owners4 = {k: four.walk(k)[0] for k in keys}
    moved = sum(1 for k in keys if owners3[k] != owners4[k])
    assert moved < 0.35 * len(keys)  # ideally 1/4; modulo hashing would move 3/4
    assert all(owners4[k] == "d" for k in keys if owners3[k] != owners4[k])  # only to the newcomer
    assert set(Counter(owners3.values())) == {"a", "b", "c"}


def endpoint(replica: str, adapters: tuple[str, ...] = ()) -> Endpoint:
    return Endpoint(replica, "node", f"http://{replica}", True, adapters)


def table(
    replicas: list[str], slots: int = 2, policy: str = "", adapters: dict[str, tuple[str, ...]] | None = None
) -> RoutingTable:
    eps = tuple(endpoint(r, (adapters or {}).get(r, ())) for r in replicas)
    return RoutingTable(1, {"m": ModelRoute("m", slots, 2048, eps, balancer=policy)})


def balancer(**kw: object) -> Balancer:
    return Balancer(InProcessState(), GatewayMetrics(CollectorRegistry()), **kw)  # type: ignore[arg-type]


async def take(b: Balancer, t: RoutingTable, keys: RequestKeys = NO_KEYS, adapter: str | None = None) -> str:
    chosen = await b.acquire(lambda: t, "m", adapter, keys, set())
    assert chosen is not None
    return chosen.replica_id


async def test_round_robin_cycles_and_least_load_fills_the_emptiest() -> None:
    rr = balancer(default_policy="round-robin")
    t = table(["r1", "r2", "r3"], slots=10)
    assert [await take(rr, t) for _ in range(6)] == ["r1", "r2", "r3", "r1", "r2", "r3"]
    ll = balancer()
    picks = [await take(ll, t) for _ in range(6)]
    assert Counter(picks) == {"r1": 2, "r2": 2, "r3": 2}


SYSTEM = ("system", "You are the support desk of a large bank. " * 100)  # 4,300 characters: 17 blocks


def conversation(question: str, *history: str) -> RequestKeys:
    """A chat under SYSTEM: the first question, then (answer, question) pairs as it goes on."""
    turns = [SYSTEM, ("user", question)]
    for i, text in enumerate(history):
        turns.append(("assistant" if i % 2 == 0 else "user", text))
    return request_keys(chat(*turns), {})


async def test_prefix_affinity_sends_a_conversation_back_to_its_replica_while_it_has_a_free_slot() -> None:
    b = balancer(queue_limit=0)
    t = table(["r1", "r2", "r3"], slots=6, policy="prefix-affinity")
    history: list[str] = []
    first = await take(b, t, conversation("Question 0?"))
    for turn in range(1, 6):  # turn after turn, one request at a time: always its replica
        await b.release("m", endpoint(first))
        history += [f"Answer {turn}. " * 20, f"Question {turn}?"]
        assert await take(b, t, conversation("Question 0?", *history)) == first
    others = [
        await take(b, t, RequestKeys(request_keys(chat(("user", f"other-{i}")), {}).blocks)) for i in range(6)
    ]
    assert len(set(others)) == 3  # new prompts go to the least loaded replica
    for replica in others:
        await b.release("m", endpoint(replica))
    hot = [await take(b, t, conversation("Question 0?", *history)) for _ in range(9)]  # all at once
    assert Counter(hot)[first] == 6 - 1  # its holder fills its free slots (one is the open turn)…
    assert len(set(hot)) > 1  # …then it spills over
    b2 = balancer(queue_limit=0)  # and a prompt short of a block is affinity for equals, least load else
    short = RequestKeys(request_keys(chat(("user", "hi")), {}).blocks)
    home = await take(b2, t, short)
    assert await take(b2, t, short) != home


async def test_a_new_conversation_prefers_its_system_prompts_replica_unless_it_is_much_busier() -> None:
    b = balancer(queue_limit=0)
    t = table(["r1", "r2", "r3"], slots=4, policy="prefix-affinity")
    first = await take(b, t, conversation("Question 1?"))
    await b.release("m", endpoint(first))
    # All idle: the replica that served the system prompt wins, whatever the ring says.
    assert {await _take_released(b, t, conversation(f"Question c-{i}?")) for i in range(8)} == {first}
    # Busier by up to half its slots, it still wins: splitting a system prompt over replicas puts a
    # copy in each one's cache, and with more prompts than slots they evict each other.
    held = [await take(b, t, conversation(f"Busy {i}?")) for i in range(3)]
    assert held == [first, first, first]  # the third: 2 of 4 busier
    # Three in flight against none is more than half of 4 slots: a less loaded one wins…
    spilled = await take(b, t, conversation("Question new?"))
    assert spilled != first
    await b.release("m", endpoint(spilled))
    # …and now holds the system prompt too: the next new conversation goes there, the least loaded.
    assert await take(b, t, conversation("Question newer?")) == spilled


async def test_a_conversation_follows_its_history_over_a_replica_holding_only_its_system_prompt() -> None:
    b = balancer(queue_limit=0)
    t = table(["r1", "r2"], slots=4, policy="prefix-affinity")
    history = ["Answer. " * 400, "Next question?"]  # 3,200 characters of history: 13 blocks more
    home = await take(b, t, conversation("Question?", *history))
    assert [await take(b, t, conversation(f"Busy {i}?")) for i in range(2)] == [home, home]
    other = await take(b, t, conversation("Another conversation?"))  # home is much busier: the other…
    assert other != home  # …holds the system prompt from now on
    await b.release("m", endpoint(other))
    await b.release("m", endpoint(home))  # home: 2 of 4 in flight, the other idle
    assert await take(b, t, conversation("Question?", *history, "Answer 2.", "Third question?")) == home
    assert await take(b, t, conversation("A new conversation?")) == other


async def test_new_system_prompts_on_equally_loaded_replicas_spread_by_how_many_each_holds() -> None:
    """Eight system prompts on two replicas of 4 slots, each arriving while the replicas are equally
    loaded: ties went by the prompt's hash-ring order, which gave these eight 5 and 3 (checked) and a
    replica holding more prompts than slots evicts them in turn; now by how many each holds: 4 and 4.
    (A less loaded replica still wins first: placing by the count first lost on random prompts.)"""
    b = balancer(queue_limit=0)
    t = table(["r1", "r2"], slots=4, policy="prefix-affinity")

    def prompt(i: int, question: str) -> RequestKeys:
        return request_keys(chat(("system", f"System prompt {i}. " * 100), ("user", question)), {})

    owners: dict[int, str] = {}
    for i in range(8):
        busy = [await take(b, t), await take(b, t)]  # no prompt: least load, one on each replica
        assert sorted(busy) == ["r1", "r2"]
        owners[i] = await _take_released(b, t, prompt(i, "q"))
        for replica in busy:
            await b.release("m", endpoint(replica))
    assert Counter(owners.values()) == {"r1": 4, "r2": 4}
    for i in range(8):  # and each prompt's next conversation goes where its prompt is
        assert await _take_released(b, t, prompt(i, "q2")) == owners[i]
    # A replica with a request more in flight is passed over for a new prompt, whatever it holds.
    busy = await take(b, t)
    assert await _take_released(b, t, prompt(99, "q")) != busy


async def _take_released(b: Balancer, t: RoutingTable, keys: RequestKeys) -> str:
    replica = await take(b, t, keys)
    await b.release("m", endpoint(replica))
    return replica


async def test_session_sticks_and_moves_only_when_its_replica_is_gone() -> None:
    b = balancer(default_policy="session")
    alice = RequestKeys(session="alice")
    t = table(["r1", "r2", "r3"], slots=10)
    home = await take(b, t, alice)
    assert {await take(b, t, alice) for _ in range(3)} == {home}
    without = table([r for r in ("r1", "r2", "r3") if r != home], slots=10)
    moved = await take(b, without, alice)
    assert moved != home
    assert await take(b, without, alice) == moved  # sticky to its new replica


async def test_adapter_requests_go_only_where_the_adapter_is_loaded() -> None:
    b = balancer()
    t = table(["r1", "r2"], slots=10, adapters={"r2": ("tone",)})
    assert {await take(b, t, adapter="tone") for _ in range(4)} == {"r2"}


async def test_all_busy_queues_until_a_slot_frees() -> None:
    b = balancer(queue_timeout_s=5)
    t = table(["r1"], slots=1)
    await take(b, t)
    waiter = asyncio.create_task(take(b, t))
    await asyncio.sleep(0.1)
    assert not waiter.done()
    await b.release("m", endpoint("r1"))
    assert await asyncio.wait_for(waiter, 2) == "r1"


async def test_a_full_queue_and_a_long_wait_are_429_with_retry_after() -> None:
    b = balancer(queue_limit=1, queue_timeout_s=0.3, retry_after_s=3)
    t = table(["r1"], slots=1)
    await take(b, t)
    waiting = asyncio.create_task(take(b, t))
    await asyncio.sleep(0.05)
    with pytest.raises(Overloaded) as full:
        await take(b, t)
    assert full.value.retry_after == 3
    with pytest.raises(QueueTimeout) as timed_out:  # a saturated pool: back off (429), not "down" (503)
        await waiting
    assert timed_out.value.retry_after == 3
    assert "stayed busy" in timed_out.value.message


async def test_no_ready_replica_is_none_not_a_wait() -> None:
    b = balancer()
    empty = RoutingTable(1, {"m": ModelRoute("m", 2, 2048, ())})
    assert await b.acquire(lambda: empty, "m", None, RequestKeys(), set()) is None


async def test_an_autoscaled_model_with_no_ready_replica_holds_requests_until_one_is_ready() -> None:
    b = balancer()
    cold = RoutingTable(1, {"m": ModelRoute("m", 2, 2048, (), target_replicas=1, holds=True, hold_s=30)})
    current = [cold]
    waiter = asyncio.create_task(b.acquire(lambda: current[0], "m", None, RequestKeys(), set()))
    await asyncio.sleep(0.2)
    assert not waiter.done()
    assert b.held.is_set(), "the load reporter is woken at once"
    assert b.loads()["m"].queued == 1
    current[0] = table(["r1"])  # the replica became ready
    chosen = await asyncio.wait_for(waiter, 2)
    assert chosen is not None
    assert chosen.replica_id == "r1"
    assert (b.loads()["m"].in_engines, b.loads()["m"].queued) == (1, 0)
    await b.release("m", chosen)
    assert b.loads()["m"].in_engines == 0


async def test_a_hold_past_its_time_is_a_503_cold_start_timeout() -> None:
    b = balancer(retry_after_s=4)
    cold = RoutingTable(1, {"m": ModelRoute("m", 2, 2048, (), holds=True, hold_s=0.3)})
    with pytest.raises(ColdStartTimeout) as timed_out:
        await b.acquire(lambda: cold, "m", None, RequestKeys(), set())
    assert timed_out.value.retry_after == 4
    assert "became ready within" in timed_out.value.message
