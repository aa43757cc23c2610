"""Where sessions live, and the indexes that make every aggregate O(1) or O(log n).

The manager talks to storage only through `SessionStore`, so a shared store (several replicas)
or a durable one can replace `InMemorySessionStore` without touching the manager's rules.
A store holds immutable `GenerationSession` objects; `put` replaces one and moves its index
entries. Stores are not thread-safe on their own: the manager serialises access with its lock.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Protocol

from sortedcontainers import SortedList

from sidecar.core.clock import to_micros
from sidecar.core.models import GenerationSession, GenerationStatus

__all__ = ["Cursor", "InMemorySessionStore", "SessionStore"]

# A position in creation order: (created_at in Unix microseconds, session_id).
Cursor = tuple[int, str]


class SessionStore(Protocol):
    """Storage plus the ordered indexes the manager's figures are read from."""

    def __len__(self) -> int: ...
    def __contains__(self, session_id: object) -> bool: ...
    def get(self, session_id: str) -> GenerationSession | None: ...
    def put(self, session: GenerationSession) -> None: ...
    def delete(self, session_id: str) -> GenerationSession | None: ...
    def clear(self) -> None: ...
    def count_by_status(self) -> Mapping[GenerationStatus, int]: ...
    def count_created_before(self, micros: int) -> int: ...
    def created_micros_sum(self) -> int: ...
    def created_micros_range(self) -> tuple[int, int] | None: ...
    def oldest(self, status: GenerationStatus) -> GenerationSession | None: ...
    def created_before(self, micros: int, status: GenerationStatus | None = None) -> list[str]: ...
    def count_updated_before(self, status: GenerationStatus, micros: int) -> int: ...
    def page(
        self, status: GenerationStatus | None, after: Cursor | None, limit: int
    ) -> list[GenerationSession]: ...
    def values(self, status: GenerationStatus | None = None) -> Iterator[GenerationSession]: ...


class InMemorySessionStore:
    """A dict of sessions with sorted indexes by creation time (overall and per status)
    and by last update (per status, for stuck detection)."""

    def __init__(self) -> None:
        self._sessions: dict[str, GenerationSession] = {}
        self._by_created: SortedList = SortedList()
        self._by_status_created: dict[GenerationStatus, SortedList] = {
            status: SortedList() for status in GenerationStatus
        }
        self._by_status_updated: dict[GenerationStatus, SortedList] = {
            status: SortedList() for status in GenerationStatus
        }
        self._created_sum = 0

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._sessions

    def get(self, session_id: str) -> GenerationSession | None:
        return self._sessions.get(session_id)

    def put(self, session: GenerationSession) -> None:
        """Insert a new session or replace the stored one with the same id."""
        old = self._sessions.get(session.session_id)
        self._sessions[session.session_id] = session
        if old is None:
            self._index(session)
            return
        if old.status is not session.status or old.created_at != session.created_at:
            self._unindex(old)
            self._index(session)
        elif old.updated_at != session.updated_at:
            # The common case (progress, scenes): only the last-update index moves.
            by_updated = self._by_status_updated[session.status]
            by_updated.remove((to_micros(old.updated_at), old.session_id))
            by_updated.add((to_micros(session.updated_at), session.session_id))

    def delete(self, session_id: str) -> GenerationSession | None:
        old = self._sessions.pop(session_id, None)
        if old is not None:
            self._unindex(old)
        return old

    def clear(self) -> None:
        # Reset in place rather than re-running __init__, which a subclass may have changed.
        self._sessions.clear()
        self._by_created.clear()
        for index in (*self._by_status_created.values(), *self._by_status_updated.values()):
            index.clear()
        self._created_sum = 0

    def _index(self, session: GenerationSession) -> None:
        created = (to_micros(session.created_at), session.session_id)
        self._by_created.add(created)
        self._by_status_created[session.status].add(created)
        self._by_status_updated[session.status].add(
            (to_micros(session.updated_at), session.session_id)
        )
        self._created_sum += created[0]

    def _unindex(self, session: GenerationSession) -> None:
        created = (to_micros(session.created_at), session.session_id)
        self._by_created.remove(created)
        self._by_status_created[session.status].remove(created)
        self._by_status_updated[session.status].remove(
            (to_micros(session.updated_at), session.session_id)
        )
        self._created_sum -= created[0]

    def count_by_status(self) -> Mapping[GenerationStatus, int]:
        return {status: len(index) for status, index in self._by_status_created.items()}

    def count_created_before(self, micros: int) -> int:
        """How many sessions were created strictly before `micros`."""
        return int(self._by_created.bisect_left((micros,)))

    def created_micros_sum(self) -> int:
        return self._created_sum

    def created_micros_range(self) -> tuple[int, int] | None:
        if not self._by_created:
            return None
        return self._by_created[0][0], self._by_created[-1][0]

    def oldest(self, status: GenerationStatus) -> GenerationSession | None:
        index = self._by_status_created[status]
        return self._sessions[index[0][1]] if index else None

    def created_before(self, micros: int, status: GenerationStatus | None = None) -> list[str]:
        """Ids of the sessions created strictly before `micros`, oldest first."""
        index = self._by_created if status is None else self._by_status_created[status]
        return [sid for _, sid in index.irange(maximum=(micros,), inclusive=(True, False))]

    def count_updated_before(self, status: GenerationStatus, micros: int) -> int:
        """How many sessions in `status` were last updated strictly before `micros`."""
        return int(self._by_status_updated[status].bisect_left((micros,)))

    def page(
        self, status: GenerationStatus | None, after: Cursor | None, limit: int
    ) -> list[GenerationSession]:
        """Up to `limit` sessions in creation order, starting just after `after`."""
        index = self._by_created if status is None else self._by_status_created[status]
        keys = index.irange(minimum=after, inclusive=(False, True)) if after else iter(index)
        out: list[GenerationSession] = []
        for _, sid in keys:
            if len(out) >= limit:
                break
            out.append(self._sessions[sid])
        return out

    def values(self, status: GenerationStatus | None = None) -> Iterator[GenerationSession]:
        """Sessions in creation order (ids are copied first, so deleting meanwhile is safe)."""
        index = self._by_created if status is None else self._by_status_created[status]
        for _, sid in list(index):
            session = self._sessions.get(sid)
            if session is not None:
                yield session
