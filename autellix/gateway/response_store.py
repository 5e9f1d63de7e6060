"""The Responses API's state, owned by the gateway: the responses it served (with `store` not false),
so that `previous_response_id` works behind any number of engines (docs/gateway.md, "The Responses
API"). Engines get stateless requests: the gateway expands a follow-up's input to the whole history.

Each stored response keeps its own items only (the input it was sent, before expansion, then its output
items) and a link to the response it continued, so a chain of n turns costs O(n) memory, not O(n^2).
Pure Python: no HTTP here.

Invariants:
- Memory is bounded: the sum of stored sizes (the characters of each response's strings, plus 16 per
  item: an estimate of its bytes) stays at most `max_bytes` after every `put`, least recently used
  first out, and nothing is served past `ttl` seconds since its last use.
- Least-recently-used order puts every response after all of its descendants (using or adding a
  response touches it and then each of its ancestors), so eviction never drops a response that a kept
  one continues: a kept response's history is always whole.
- A response is visible to its owner only: another owner's id is answered exactly as an unknown one.
- DELETE hides a response at once (lookups miss it, its response object is dropped); its items stay
  while a kept response continues it, and go with the last of those.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

ITEM_OVERHEAD = 16


def size_of(value: object) -> int:
    """An estimate of `value`'s size in bytes: its strings' characters, plus ITEM_OVERHEAD per
    container (cheap: no serialisation)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return ITEM_OVERHEAD + sum(len(k) + size_of(v) for k, v in value.items())
    if isinstance(value, list):
        return ITEM_OVERHEAD + sum(size_of(v) for v in value)
    return 8


@dataclass(slots=True, eq=False)
class Stored:
    """One stored response."""

    id: str
    owner: str | None
    parent: Stored | None
    items: list[Any]
    """Its own input items (before expansion), then its output items."""
    inputs: int
    """How many of `items` are input."""
    response: bytes | None
    """The response object as JSON (GET /v1/responses/{id}); None once deleted."""
    program_id: str | None
    thread: str
    size: int
    used: float
    claims: int = 0
    """Calls that continued it (the first continues its thread, later ones branch)."""

    def input_history(self) -> list[Any]:
        """The items it was generated from (GET /v1/responses/{id}/input_items): its chain's items, then
        its own input, oldest first."""
        before = self.parent.history() if self.parent is not None else []
        return before + self.items[:self.inputs]

    def history(self) -> list[Any]:
        """Every item of the chain ending here, oldest first: a follow-up's input before its own."""
        chain: list[Stored] = []
        node: Stored | None = self
        while node is not None:
            chain.append(node)
            node = node.parent
        return [item for node in reversed(chain) for item in node.items]


class ResponseStore:
    """Stored responses by id, bounded in bytes and time (module doc)."""

    def __init__(self, max_bytes: int, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self.ttl = ttl
        self.clock = clock
        self.entries: OrderedDict[str, Stored] = OrderedDict()
        """Every kept response, least recently used first (deleted ones included, under their id)."""
        self.visible: dict[str, Stored] = {}
        """The responses lookups find (not deleted)."""
        self.bytes = 0

    def __len__(self) -> int:
        return len(self.visible)

    def get(self, response_id: str, owner: str | None) -> Stored | None:
        """The owner's live response `response_id` (touched), or None."""
        self._expire()
        entry = self.visible.get(response_id)
        if entry is None or entry.owner != owner:
            return None
        self._touch(entry)
        return entry

    def put(self, response_id: str, owner: str | None, parent: Stored | None, items: list[Any], inputs: int,
            response: bytes, program_id: str | None, thread: str) -> Stored | None:
        """Keep a response whose first `inputs` items are its input; None (nothing kept) when it alone is
        over the limit or its id is taken."""
        if parent is not None and self.entries.get(parent.id) is not parent:  # dropped during the call
            before = parent.history()
            items, inputs, parent = before + items, len(before) + inputs, None
        size = size_of(items) + len(response) + ITEM_OVERHEAD
        if size > self.max_bytes or response_id in self.entries:
            return None
        entry = Stored(response_id, owner, parent, items, inputs, response, program_id, thread, size,
                       self.clock())
        self.entries[response_id] = entry
        self.visible[response_id] = entry
        self.bytes += size
        self._touch(entry)
        self._evict()
        return entry

    def delete(self, response_id: str, owner: str | None) -> bool:
        """Hide the owner's response (module doc); False when there is none to delete."""
        entry = self.visible.get(response_id)
        if entry is None or entry.owner != owner:
            return False
        del self.visible[response_id]
        entry.response = None
        return True

    def _touch(self, entry: Stored) -> None:
        now = self.clock()
        node: Stored | None = entry
        while node is not None and node.id in self.entries:
            node.used = now
            self.entries.move_to_end(node.id)
            node = node.parent

    def _drop_first(self) -> None:
        _, entry = self.entries.popitem(last=False)
        self.visible.pop(entry.id, None)
        self.bytes -= entry.size

    def _evict(self) -> None:
        while self.bytes > self.max_bytes and self.entries:
            self._drop_first()
        self._expire()

    def _expire(self) -> None:
        cutoff = self.clock() - self.ttl
        while self.entries and next(iter(self.entries.values())).used < cutoff:
            self._drop_first()


def item_page(items: list[Any], response_id: str, order: str, after: str | None,
              limit: int) -> dict[str, Any]:
    """One page of a response's input items in the OpenAI list shape: `order` "asc" (oldest first) or
    "desc", the `limit` items after the one whose id is `after` (None: from the start). Items sent without
    an id get `<response id>_in<position>` (stable: the chain never changes), and a type ("message") when
    they have none. Raises KeyError for an `after` that is not an item of the list."""
    listed = [{**item, "id": item.get("id") or f"{response_id}_in{i}", "type": item.get("type", "message")}
              for i, item in enumerate(items) if isinstance(item, dict)]
    if order == "desc":
        listed.reverse()
    start = 0
    if after is not None:
        start = next((i for i, item in enumerate(listed) if item["id"] == after), -1) + 1
        if start == 0:
            raise KeyError(after)
    page = listed[start:start + limit]
    return {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None, "has_more": start + limit < len(listed)}
