"""BoundedLru: least recently used entries go first, lookups are counted."""

import pytest

from trustee_common.lru import BoundedLru


def test_the_least_recently_used_entry_is_evicted_at_capacity() -> None:
    cache: BoundedLru[str, int] = BoundedLru(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1
    cache.put("c", 3)
    assert cache.get("b") is None
    assert (cache.get("a"), cache.get("c"), len(cache)) == (1, 3, 2)
    assert (cache.hits, cache.misses) == (3, 1)
    cache.discard("a")
    cache.clear()
    assert len(cache) == 0


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity"):
        BoundedLru(0)
