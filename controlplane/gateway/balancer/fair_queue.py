"""Who waits for a model's next free slot, and in which order: priorities first, then weighted fair
queuing between tenants, first come first served within a tenant.

A request that finds no free slot (or finds others already waiting) takes a ``Ticket`` and waits
its turn: only the first ticket in order may take a slot, so a tenant that queues hundreds of
requests delays another tenant's request by about one slot turn, not by its whole backlog.

Order: ``priority`` (critical, standard, sheddable), then the ticket's virtual start tag, then
arrival. Start-time fair queuing: each tenant's next request starts at ``max(V, the tenant's last
finish)`` and finishes ``1 / weight`` later, where ``V`` is the start tag of the last ticket served;
a tenant of weight 2 thus gets two turns for every turn of a tenant of weight 1 while both wait, and
a tenant that was idle starts at ``V`` — it waits for nobody's backlog. ``TagClock`` keeps ``V`` and
the tenants' finishes; ``RedisTagClock`` (redis_state.py) shares them between gateways.

Bounds: at most ``limit`` waiting requests per model and ``tenant_limit`` per tenant; past either a
request is refused (429) naming the bound — except that a request that outranks a waiting
``sheddable`` one takes its place, and that one is refused instead (shed first).
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from dataclasses import dataclass, field
from typing import Literal, Protocol

from llamafleet.core.errors import Overloaded

Priority = Literal["critical", "standard", "sheddable"]
PRIORITIES: tuple[Priority, ...] = ("critical", "standard", "sheddable")  # first served first
ANONYMOUS_TENANT = "anonymous"


@dataclass(frozen=True)
class Tenancy:
    """Whose request it is and how it waits: from the API key, and the headers the key allows."""

    tenant: str = ANONYMOUS_TENANT
    weight: float = 1.0
    priority: Priority = "standard"
    ttft_objective_s: float = 0.0  # > 0: refuse at once when the predicted wait already exceeds it

    @property
    def rank(self) -> int:
        return PRIORITIES.index(self.priority)


class QueueFull(Overloaded):
    """A queue bound refused the request; ``bound`` names it (queue_full, tenant_queue_full)."""

    def __init__(self, message: str, retry_after: float, bound: str) -> None:
        super().__init__(message, retry_after=retry_after)
        self.bound = bound


@dataclass(eq=False)
class Ticket:
    tenancy: Tenancy
    tag: float  # virtual start
    arrival: int
    adapter: str | None = None  # requests for a LoRA adapter wait in line with each other
    shed: Overloaded | None = None  # set when a more urgent request took this one's place
    woken: asyncio.Event = field(default_factory=asyncio.Event)
    name: str = ""  # unique across gateways (the shared waiting set's member)

    @property
    def order(self) -> tuple[int, float, int]:
        return (self.tenancy.rank, self.tag, self.arrival)

    @property
    def score(self) -> float:
        """The order as one number (the shared waiting set's score): priority, then the tag."""
        return self.tenancy.rank * 1e12 + self.tag


class TagClock(Protocol):
    """Virtual times, and who waits where other gateways can see it (Redis) or only here."""

    async def start(self, model: str, tenant: str, weight: float) -> float:
        """A new ticket's start tag (and the tenant's finish moved past it)."""

    async def served(self, model: str, tag: float) -> None:
        """A ticket with this start tag got a slot: the model's virtual time moves up to it."""

    async def waiting(self, model: str, ticket: Ticket) -> None:
        """The ticket waits (other gateways' requests behind it let it go first)."""

    async def left(self, model: str, ticket: Ticket) -> None:
        """The ticket no longer waits (served, refused, timed out, or its client went away)."""

    async def may_take(self, model: str, ticket: Ticket | None) -> bool:
        """Whether no request waiting at another gateway comes before this one (None: not queued)."""


class LocalTagClock:
    """This gateway's virtual times (no Redis: fairness among the requests this gateway holds)."""

    def __init__(self) -> None:
        self._virtual: dict[str, float] = {}
        self._finish: dict[tuple[str, str], float] = {}

    async def start(self, model: str, tenant: str, weight: float) -> float:
        begin = max(self._virtual.get(model, 0.0), self._finish.get((model, tenant), 0.0))
        if len(self._finish) > 100_000:  # bound memory: forget tenants at or behind virtual time
            self._finish = {k: v for k, v in self._finish.items() if v > self._virtual.get(k[0], 0.0)}
        self._finish[(model, tenant)] = begin + 1.0 / weight
        return begin

    async def served(self, model: str, tag: float) -> None:
        self._virtual[model] = max(self._virtual.get(model, 0.0), tag)

    async def waiting(self, model: str, ticket: Ticket) -> None:
        return None

    async def left(self, model: str, ticket: Ticket) -> None:
        return None

    async def may_take(self, model: str, ticket: Ticket | None) -> bool:
        return True


class FairQueue:
    """The tickets waiting for one model (and LoRA adapter) in this gateway."""

    def __init__(self, limit: int, tenant_limit: int) -> None:
        self._limit = limit
        self._tenant_limit = tenant_limit
        self._tickets: list[Ticket] = []
        self._arrivals = itertools.count()

    def __len__(self) -> int:
        return len(self._tickets)

    def waiting(self, tenant: str) -> int:
        return sum(1 for t in self._tickets if t.tenancy.tenant == tenant)

    def waiting_for(self, adapter: str | None) -> bool:
        return any(t.adapter == adapter for t in self._tickets)

    def ahead_of(self, ticket: Ticket) -> int:
        return sum(1 for t in self._tickets if t.order < ticket.order)

    def head(self, adapter: str | None) -> Ticket | None:
        """The first in line among requests for the same adapter (or the base model)."""
        return min((t for t in self._tickets if t.adapter == adapter), key=lambda t: t.order, default=None)

    def check(self, tenancy: Tenancy, model: str, retry_after: float) -> Ticket | None:
        """Whether a request of ``tenancy`` may join: QueueFull naming the bound that refuses it, else
        the waiting sheddable ticket it would take the place of (None: there is room)."""
        if self._tenant_limit and self.waiting(tenancy.tenant) >= self._tenant_limit:
            raise QueueFull(
                f"tenant {tenancy.tenant!r} already has {self._tenant_limit} requests waiting for {model!r} "
                "(the per-tenant queue bound); retry later",
                retry_after,
                "tenant_queue_full",
            )
        if len(self._tickets) < self._limit:
            return None
        victim = self._sheddable_behind(tenancy)
        if victim is None:
            why = "; sheddable requests are refused first" if tenancy.priority == "sheddable" else ""
            raise QueueFull(
                f"{len(self._tickets)} requests for {model!r} are already waiting (the model's queue "
                f"bound){why}; retry later",
                retry_after,
                "queue_full",
            )
        return victim

    def join(
        self, tenancy: Tenancy, tag: float, adapter: str | None, model: str, retry_after: float
    ) -> Ticket:
        """A ticket in the queue (a sheddable one it outranks shed if the queue is full), or QueueFull."""
        victim = self.check(tenancy, model, retry_after)
        if victim is not None:
            self.leave(victim)
            victim.shed = Overloaded(
                f"shed: a {tenancy.priority} request took this sheddable request's place in the full queue "
                f"for {model!r}; retry later",
                retry_after=retry_after,
            )
            victim.woken.set()
        ticket = Ticket(tenancy, tag, next(self._arrivals), adapter, name=uuid.uuid4().hex)
        self._tickets.append(ticket)
        return ticket

    def _sheddable_behind(self, tenancy: Tenancy) -> Ticket | None:
        """The last waiting sheddable ticket that a request of ``tenancy`` outranks, if any."""
        shed = [
            t for t in self._tickets if t.tenancy.priority == "sheddable" and t.tenancy.rank > tenancy.rank
        ]
        return max(shed, key=lambda t: t.order, default=None)

    def leave(self, ticket: Ticket) -> None:
        if ticket in self._tickets:
            self._tickets.remove(ticket)
        head = self.head(ticket.adapter)
        if head is not None:
            head.woken.set()  # the next in line looks at once
