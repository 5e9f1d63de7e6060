"""KV block pools: LRU prefix cache over segments, pinning, and the lockstep decode aggregates."""

from __future__ import annotations

import random

import pytest

from autellix.sim.decode import DecodeSet
from autellix.sim.kv import KVCache


def test_pin_allocates_missing_blocks_and_unpin_makes_them_evictable():
    kv = KVCache(100, 0)
    chain = (("a", 10), ("b", 5))
    assert kv.hit_blocks(chain) == 0 and kv.admission_blocks(chain) == 15
    assert kv.pin(chain) == 15
    assert kv.free == 85 and kv.evictable == 0 and kv.pinned() == 15
    kv.unpin(chain)
    assert kv.free == 85 and kv.evictable == 15 and kv.available() == 100
    assert kv.hit_blocks(chain) == 15 and kv.admission_blocks(chain) == 15  # pinning evictable costs


def test_alloc_evicts_least_recently_used_leaf_first():
    kv = KVCache(30, 0)
    kv.pin((("root", 10), ("leaf", 10)))
    kv.unpin((("root", 10), ("leaf", 10)))  # leaf touched first: root is the most recent
    kv.alloc(25)  # 10 free blocks, then 15 evicted: all of the leaf, then the root's tail
    assert "leaf" not in kv.cached and kv.cached["root"] == 5
    assert kv.free == 0 and kv.evictable == 5 and kv.evicted == 15
    assert kv.hit_blocks((("root", 10), ("leaf", 10))) == 5


def test_pinned_segments_are_never_evicted():
    kv = KVCache(20, 0)
    kv.pin((("shared", 10),))
    kv.put_own("own", 5)
    assert kv.available() == 15
    kv.alloc(15)
    assert kv.cached == {"shared": 10} and kv.free == 0


def test_take_own_returns_resident_blocks():
    kv = KVCache(20, 0)
    kv.alloc(6)
    kv.put_own("me", 6)
    assert kv.take_own("me") == 6 and kv.evictable == 0 and kv.take_own("me") == 0


def test_bad_pool_sizes():
    with pytest.raises(ValueError):
        KVCache(0, 0)


@pytest.mark.parametrize("block", [16, 128])  # vLLM's GPU and CPU block sizes
def test_decode_growth_matches_per_call_count(block):
    rng = random.Random(0)
    dec = DecodeSet(block)
    calls = []
    for _ in range(40):
        class C:  # minimal stand-in with the fields DecodeSet touches
            pass
        c = C()
        c.computed, c.generated, c.event_version, c.admit_seq = rng.randint(1, 200), 0, 0, 0
        start = rng.randint(0, 30)
        dec.add(c, start)
        calls.append((c, start, c.computed))
    step = 40
    for k in (1, 7, 16, 33, 100, 300):
        brute = 0
        for c, s0, c0 in calls:
            now = c0 + step - s0  # tokens at `step`
            brute += -(-(now + k) // block) - -(-now // block)
        assert dec.growth(step, k) == brute
    assert dec.ctx(step) == sum(c0 + step - s0 for _, s0, c0 in calls)
    k = dec.steps_within(step, 50, 100_000)
    assert dec.growth(step, k) <= 50 < dec.growth(step, k + 1)
