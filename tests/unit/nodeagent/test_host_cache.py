"""The host prompt cache's bookkeeping: longest match, bounded bytes, least recently used first out."""

from __future__ import annotations

from nodeagent.engine.host_cache import HostCache, SavedState


def state(tokens: list[int], size: int = 10, adapters: tuple[tuple[str, float], ...] = ()) -> SavedState:
    return SavedState(tokens, adapters, len(tokens), bytearray(size))


def test_the_longest_shared_prefix_wins_and_other_adapters_never_match() -> None:
    cache = HostCache(1000)
    short, long_ = state([1, 2, 3]), state([1, 2, 3, 4, 5, 9])
    other = state([1, 2, 3, 4, 5, 6], adapters=(("a", 1.0),))
    for s in (short, long_, other):
        assert cache.save(s)
    assert len(cache) == 2  # [1, 2, 3] begins [1, 2, 3, 4, 5, 9]: dropped when that was saved
    assert cache.best([1, 2, 3, 4, 5, 6, 7], ()) == (long_, 5)
    assert cache.best([1, 2, 3, 4, 5, 6, 7], (("a", 1.0),)) == (other, 6)
    assert cache.best([7, 1, 2], ()) == (None, 0)
    assert cache.best([], ()) == (None, 0)
    assert cache.holds([1, 2, 3, 4], ())
    assert not cache.holds([1, 2, 4], ())


def test_bytes_stay_within_the_limit_dropping_the_least_recently_used() -> None:
    cache = HostCache(30)
    a, b, c = state([1] * 5), state([2] * 5), state([3] * 5)
    for s in (a, b, c):
        assert cache.save(s)
    cache.touch(a)  # restored just now: b is now the least recently used
    d = state([4] * 5)
    assert cache.save(d)
    assert cache.bytes == 30
    assert cache.best([2] * 5, ()) == (None, 0)
    assert cache.best([1] * 5, ())[0] is a
    assert not cache.save(state([5] * 5, size=31))  # larger than the whole limit: not kept
    assert cache.bytes == 30
    cache.remove(a)
    assert cache.bytes == 20
    assert len(cache) == 2


def test_a_zero_limit_keeps_nothing() -> None:
    cache = HostCache(0)
    assert not cache.enabled
    assert not cache.save(state([1, 2], size=1))
