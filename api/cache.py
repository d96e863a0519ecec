"""A small cache of query answers that stays valid until the underlying tables change.

Aggregating 100k settled signals costs tens of milliseconds, yet `signal_performance`
changes only when signals settle. Every answer is stored with the tables' change
counters (`api_data_versions`, bumped in the writers' own transactions by sql/004);
a lookup re-reads the counters (one indexed row each) and reuses the answer while they
are unchanged. The counters are read *before* the computation, so a write that commits
in between makes the entry look old, never the other way round.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

from signalengine.api.db import AsyncConn
from signalengine.api.db.performance import data_versions

T = TypeVar("T")

DEFAULT_MAX_ENTRIES = 512


class VersionedCache:
    """Answers keyed by (tables, key), each tagged with the tables' versions; LRU-bounded."""

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self._entries: OrderedDict[Hashable, tuple[tuple[int, ...], Any]] = OrderedDict()
        self._max_entries = max_entries
        self.hits = 0
        self.misses = 0

    async def get(
        self,
        key: Hashable,
        compute: Callable[[], Awaitable[T]],
        *,
        conn: AsyncConn,
        tables: tuple[str, ...] = ("signal_performance",),
    ) -> T:
        """The cached answer for `key` if `tables` did not change since, else `compute()`."""
        versions = await data_versions(conn=conn, names=list(tables))
        full_key = (tables, key)
        entry = self._entries.get(full_key)
        if versions is not None and entry is not None and entry[0] == versions:
            self._entries.move_to_end(full_key)
            self.hits += 1
            value: T = entry[1]
            return value
        self.misses += 1
        value = await compute()
        if versions is not None:
            self._entries[full_key] = (versions, value)
            self._entries.move_to_end(full_key)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
        return value
