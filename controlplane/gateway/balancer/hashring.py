"""A consistent-hash ring: each replica owns many points, a key's order of replicas starts at its hash.

Keys move little when replicas come and go (a newcomer takes about 1/n of them), and every
gateway computes the same order for a key, so ties between equally loaded replicas are broken
alike everywhere.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Sequence

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
