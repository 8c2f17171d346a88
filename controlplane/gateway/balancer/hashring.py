"""Consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam 2017), as in KubeAI's prefix hash.

Each replica owns many points on a ring; a key goes to the first replica clockwise from its hash
whose load stays within ``bound × mean load`` after taking it, so a hot prefix spills to the
next replica instead of piling up, and keys move little when replicas come and go.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Callable, Sequence

VIRTUAL_NODES = 100


def _point(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class HashRing:
    def __init__(self, members: Sequence[str], virtual_nodes: int = VIRTUAL_NODES) -> None:
        self.members = tuple(sorted(members))
        ring = sorted((_point(f"{m}#{v}"), m) for m in self.members for v in range(virtual_nodes))
        self._points = [p for p, _ in ring]
        self._owners = [m for _, m in ring]

    def walk(self, key: str) -> list[str]:
        """Distinct members in ring order from ``key``'s position: the owner first."""
        if not self._points:
            return []
        start = bisect.bisect(self._points, _point(key)) % len(self._points)
        seen: list[str] = []
        for i in range(len(self._points)):
            member = self._owners[(start + i) % len(self._points)]
            if member not in seen:
                seen.append(member)
                if len(seen) == len(self.members):
                    break
        return seen

    def pick(
        self, key: str, load: Callable[[str], int], bound: float, candidates: set[str]
    ) -> tuple[str, bool] | None:
        """The first member from ``key`` (among ``candidates``) under the load bound.

        Returns (member, whether it is the key's owner on the whole ring).
        """
        ring_order = self.walk(key)
        order = [m for m in ring_order if m in candidates]
        if not order:
            return None
        limit = math.ceil(bound * (sum(load(m) for m in order) + 1) / len(order))
        chosen = next((m for m in order if load(m) + 1 <= limit), order[0])  # the least loaded always is
        return chosen, chosen == ring_order[0]
