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


def test_without_the_host_tier_evicted_blocks_are_gone():
    kv = KVCache(30, 20)
    kv.pin((("a", 10),))
    kv.unpin((("a", 10),))
    kv.alloc(25)
    assert kv.host == {} and kv.hit_blocks((("a", 10),)) == 5


def _evicted_chain() -> tuple[KVCache, tuple]:
    """A 30-block GPU pool whose chain root(10) -> leaf(10) lost the leaf and the root's 5 tail blocks."""
    kv = KVCache(30, 20, offload=True)
    chain = (("root", 10), ("leaf", 10))
    kv.pin(chain)
    kv.unpin(chain)
    kv.alloc(25)
    return kv, chain


def test_host_tier_keeps_evicted_blocks_and_a_hit_copies_them_back():
    kv, chain = _evicted_chain()
    assert kv.cached == {"root": 5} and dict(kv.host) == {"leaf": 10, "root": 5}
    assert kv.host_used == kv.offloaded == 15
    assert kv.hit_blocks(chain) == 20  # 5 on the GPU, then 15 on the host: the whole chain
    assert kv.host_hit_blocks(chain, 20) == 15 and kv.host_hit_blocks(chain, 12) == 7
    kv.release(25)
    assert kv.pin(chain) == 15  # the missing blocks are allocated again (copied in by the engine)
    assert kv.host == {} and kv.host_used == 0  # back on the GPU: the host copies are gone
    assert kv.free + kv.pinned() == 30


def test_swapped_calls_push_host_copies_out_oldest_segment_first():
    kv, chain = _evicted_chain()
    assert kv.cpu_free() == 20  # cached copies do not reduce what a swap-out can get
    kv.reserve_cpu(10)  # 10 + 15 > 20: drop the leaf (stored first), keep the root's tail
    assert kv.cpu_used == 10 and dict(kv.host) == {"root": 5} and kv.host_used == 5
    assert kv.hit_blocks(chain) == 10  # the root, half from the host; the leaf is gone


def test_host_copy_extends_down_and_is_dropped_when_a_gap_would_form():
    kv = KVCache(20, 5, offload=True)
    kv.pin((("a", 10),))
    kv.unpin((("a", 10),))
    kv.alloc(13)  # 10 free + 3 of a's tail: blocks 7..9 go to the host
    assert kv.cached["a"] == 7 and kv.host["a"] == 3
    kv.alloc(1)  # block 6: the host run grows down to 6..9
    assert kv.cached["a"] == 6 and kv.host["a"] == 4 and kv.hit_blocks((("a", 10),)) == 10
    kv.reserve_cpu(1)  # fits beside the copy
    assert kv.host["a"] == 4
    kv.alloc(5)  # blocks 1..5 cannot all go to the host (4 CPU blocks left): keeping 6..9 would leave a gap
    assert "a" not in kv.host and kv.host_used == 0 and kv.hit_blocks((("a", 10),)) == 1


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
        for _c, s0, c0 in calls:
            now = c0 + step - s0  # tokens at `step`
            brute += -(-(now + k) // block) - -(-now // block)
        assert dec.growth(step, k) == brute
    assert dec.ctx(step) == sum(c0 + step - s0 for _, s0, c0 in calls)
    k = dec.steps_within(step, 50, 100_000)
    assert dec.growth(step, k) <= 50 < dec.growth(step, k + 1)


def test_a_held_segment_is_neither_evictable_nor_pinned_and_comes_back_evicted_first():
    kv = KVCache(40, 0)
    chain = (("root", 10), ("leaf", 10))
    kv.pin(chain)
    kv.unpin(chain)
    kv.pin((("other", 5),))
    kv.unpin((("other", 5),))
    assert kv.hold(chain) == 20 and kv.held == 20 and kv.evictable == 5
    kv.check(0)
    kv.alloc(20)  # 15 free + the unheld segment: the held chain survives
    assert kv.cached == {"root": 10, "leaf": 10} and kv.available() == 0
    assert kv.admission_blocks(chain) == 0  # pinning held blocks takes nothing available
    kv.pin(chain)  # a call of the program: held -> pinned
    assert kv.held == 0 and kv.pinned() == 20
    kv.unhold(chain)  # the hold ends while the call runs: nothing moves
    kv.unpin(chain)
    assert kv.held == 0 and list(kv.lru) == ["leaf", "root"] and not kv.early
    kv.hold(chain)
    kv.unhold(chain)  # a hold released without a call: its blocks are evicted first
    assert list(kv.early) == ["leaf", "root"] and kv.evictable == 20
    kv.check(20)


def test_shared_segments_stay_held_until_the_last_hold_goes():
    kv = KVCache(30, 0)
    a, b = (("root", 10), ("a", 5)), (("root", 10), ("b", 5))
    for c in (a, b):
        kv.pin(c)
        kv.unpin(c)
    kv.hold(a)
    kv.hold(b)
    assert kv.held == 20
    kv.unhold(a)
    assert kv.held == 15 and kv.holds == {"root": 1, "b": 1}
    kv.check(0)


def test_demoted_segments_are_evicted_before_older_live_ones():
    kv = KVCache(20, 0)
    for seg in ("old-live", "ended"):
        kv.pin(((seg, 10),))
        kv.unpin(((seg, 10),))
    kv.demote(["ended", "never-cached"])
    kv.alloc(10)
    assert "ended" not in kv.cached and kv.cached["old-live"] == 10


def test_an_ended_programs_history_never_takes_host_room_from_live_ones():
    """Program-aware host tier: a demoted (ended) segment's host copy goes at once, and its GPU blocks
    are not copied to the host when evicted, so live programs' copies keep the room."""
    kv = KVCache(20, 10, offload=True)
    for seg in ("live", "ended"):
        kv.pin(((seg, 10),))
        kv.unpin(((seg, 10),))
    kv.alloc(5)  # "live" is the least recently used: its 5 tail blocks go to the host
    assert dict(kv.host) == {"live": 5}
    kv.demote(["ended"])
    kv.alloc(10)  # the ended history goes first, and not to the host
    assert "ended" not in kv.cached and "ended" not in kv.host and kv.dead == set()
    assert dict(kv.host) == {"live": 5} and kv.hit_blocks((("live", 10),)) == 10
    kv.release(10)
    kv.demote(["live"])
    kv.pin((("live", 10),))  # used again after all: alive, stored when evicted
    assert kv.dead == set()


def test_demoting_drops_the_host_copy_of_an_ended_history():
    kv, chain = _evicted_chain()
    kv.demote(["leaf", "root"])
    assert kv.host == {} and kv.host_used == 0 and kv.hit_blocks(chain) == 5
