"""LevelQueue: vLLM's waiting queue, ordered by (priority, place), with cheap re-prioritisation.

vLLM's PriorityRequestQueue is a heap of `Request`s compared by `Request.__lt__` (Python), and offers no
way to change a queued request's priority short of an O(n) remove + heapify. Autellix changes
priorities every few steps (promotion, ATLAS gang demotion), so this queue keeps heap entries
`[priority, place, order, uid, request]` (compared in C; `uid` is unique, so requests themselves are never
compared; `place` and `order` keep a request's FCFS place when its priority changes) and changes a
priority by invalidating the old entry and pushing a new one: O(log n).

Lower priority first, then the smaller `place(request)`: by default its arrival time, as vLLM's priority
policy; the plugin passes the policy's FCFS order inside a level (`Policy.order`). Implements vLLM 0.32's
`RequestQueue` interface, which is all the scheduler uses of `self.waiting`.

Parking (the program gate, vllm_holds.py): a parked request stays queued for vLLM's bookkeeping but out of
its schedule loop. `len()` and `in` count it (vLLM's request counts keep the engine stepping and its
metrics show it waiting; an abort removes it as any queued request); truth value, peek, pop and iteration
see only the runnable ones (the schedule loop runs `while queue: queue.peek_request()`).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from vllm.v1.core.sched.request_queue import RequestQueue
from vllm.v1.request import Request

_REQUEST = 4  # index of the request in an entry; None marks a stale entry


class LevelQueue(RequestQueue):
    """Invariant: `_live` maps each runnable queued request to its one valid heap entry; the heap may
    also hold stale entries (request slot None), dropped lazily at the top and compacted when they
    dominate. `_parked` holds each parked request (not in the heap); no request is in both."""

    def __init__(self, place: Callable[[Request], Any] | None = None) -> None:
        """`place(request)`: the FCFS key among equal priorities, read once when a request is queued."""
        self._place = place or _arrival
        self._heap: list[list] = []
        self._live: dict[Request, list] = {}
        self._parked: dict[Request, tuple[Any, int]] = {}
        """parked request -> its FCFS (place, order), kept for when it is runnable again."""
        self._seq = itertools.count()

    # -- RequestQueue -----------------------------------------------------------------------------

    def add_request(self, request: Request) -> None:
        if request in self._parked:  # never expected; it stays parked
            return
        if request in self._live:  # never expected; keep one entry rather than a duplicate
            self.reprioritize(request, request.priority)
            return
        n = next(self._seq)
        entry = [request.priority, self._place(request), n, n, request]
        self._live[request] = entry
        heapq.heappush(self._heap, entry)

    def pop_request(self) -> Request:
        self._drop_stale_top()
        if not self._heap:
            raise IndexError("pop from an empty queue")
        request = heapq.heappop(self._heap)[_REQUEST]
        del self._live[request]
        return request

    def peek_request(self) -> Request:
        self._drop_stale_top()
        if not self._heap:
            raise IndexError("peek from an empty queue")
        return self._heap[0][_REQUEST]

    def prepend_request(self, request: Request) -> None:
        """No front in a priority queue: ordered by (priority, arrival) like any other."""
        self.add_request(request)

    def prepend_requests(self, requests: Iterable[Request]) -> None:
        for request in requests:
            self.add_request(request)

    def remove_request(self, request: Request) -> None:
        if self._parked.pop(request, None) is not None:
            return
        entry = self._live.pop(request, None)
        if entry is None:
            raise ValueError(f"request {request.request_id} is not queued")
        entry[_REQUEST] = None
        self._maybe_compact()

    def remove_requests(self, requests: Iterable[Request]) -> None:
        """Remove those of `requests` that are queued (vLLM passes requests of either queue)."""
        for request in requests:
            entry = self._live.pop(request, None)
            if entry is not None:
                entry[_REQUEST] = None
            elif self._parked:
                self._parked.pop(request, None)
        self._maybe_compact()

    def __bool__(self) -> bool:
        return bool(self._live)

    def __len__(self) -> int:
        return len(self._live) + len(self._parked)

    def __iter__(self) -> Iterator[Request]:
        for entry in sorted(self._live.values()):
            yield entry[_REQUEST]

    def __contains__(self, request: object) -> bool:
        return request in self._live or request in self._parked

    # -- Autellix ---------------------------------------------------------------------------------

    def reprioritize(self, request: Request, priority: int) -> bool:
        """Set a queued request's priority and its place; False (nothing done) if it is not queued."""
        entry = self._live.get(request)
        if entry is None:
            return False
        request.priority = priority
        if entry[0] != priority:
            entry[_REQUEST] = None
            fresh = [priority, entry[1], entry[2], next(self._seq), request]  # same FCFS place
            self._live[request] = fresh
            heapq.heappush(self._heap, fresh)
            self._maybe_compact()
        return True

    def rekey(self, key: Callable[[Request], tuple[int, Any]]) -> None:
        """Give every queued request (runnable or parked) the priority and place `key(request)` says,
        keeping its arrival order among equal keys: O(n log n), for a change of the whole order (the
        adaptive order's switch, docs/policy.md rule 8)."""
        live = {}
        for request, entry in self._live.items():
            request.priority, place = key(request)
            live[request] = [request.priority, place, entry[2], next(self._seq), request]
        self._live = live
        self._heap = list(live.values())
        heapq.heapify(self._heap)
        for request, (_, order) in list(self._parked.items()):
            request.priority, place = key(request)
            self._parked[request] = (place, order)

    def park(self, request: Request) -> bool:
        """Take a runnable request out of the schedule loop's view; False if it is not runnable here."""
        entry = self._live.pop(request, None)
        if entry is None:
            return False
        self._parked[request] = (entry[1], entry[2])
        entry[_REQUEST] = None
        self._maybe_compact()
        return True

    def unpark(self, request: Request) -> None:
        """Make a parked request runnable again, at its FCFS place (at its current priority)."""
        kept = self._parked.pop(request, None)
        if kept is not None:  # a fresh uid: the stale entry it left in the heap still has the old one
            entry = [request.priority, *kept, next(self._seq), request]
            self._live[request] = entry
            heapq.heappush(self._heap, entry)

    def is_parked(self, request: Request) -> bool:
        return request in self._parked

    def num_parked(self) -> int:
        return len(self._parked)

    def _drop_stale_top(self) -> None:
        heap = self._heap
        while heap and heap[0][_REQUEST] is None:
            heapq.heappop(heap)

    def _maybe_compact(self) -> None:
        if len(self._heap) > 2 * len(self._live) + 64:
            self._heap = [e for e in self._heap if e[_REQUEST] is not None]
            heapq.heapify(self._heap)


def _arrival(request: Request) -> float:
    return request.arrival_time
