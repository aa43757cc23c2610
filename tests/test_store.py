"""InMemorySessionStore on its own: the dict and the sorted indexes every figure is read from."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from conftest import C, F, P, R
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.core.clock import to_micros
from sidecar.core.models import GenerationRequest, GenerationSession, GenerationStatus, evolve
from sidecar.store import InMemorySessionStore, SessionStore

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T0_US = to_micros(T0)
STORY = GenerationRequest(story_text="A lighthouse that counts ships.", num_scenes=2)


def make(
    sid: str, status: GenerationStatus = P, created_s: float = 0, updated_s: float | None = None
) -> GenerationSession:
    created = T0 + timedelta(seconds=created_s)
    updated = created if updated_s is None else T0 + timedelta(seconds=updated_s)
    return GenerationSession(
        session_id=sid,
        status=status,
        request_data=STORY,
        created_at=created,
        last_accessed=updated,
        updated_at=updated,
    )


def us(seconds: float) -> int:
    return T0_US + round(seconds * 1_000_000)


@pytest.fixture
def store() -> InMemorySessionStore:
    return InMemorySessionStore()


@pytest.fixture
def filled(store: InMemorySessionStore) -> InMemorySessionStore:
    # created at 0..5 s; statuses in a fixed pattern
    for i, status in enumerate([P, R, C, F, P, R]):
        store.put(make(f"s{i}", status, created_s=i))
    return store


def test_store_is_a_session_store() -> None:
    store: SessionStore = InMemorySessionStore()  # the manager's only view of storage
    assert len(store) == 0


def test_put_get_contains_len(store: InMemorySessionStore) -> None:
    session = make("a")
    store.put(session)
    assert len(store) == 1
    assert "a" in store
    assert "b" not in store
    assert store.get("a") is session
    assert store.get("b") is None


def test_put_replaces_the_session_with_the_same_id(filled: InMemorySessionStore) -> None:
    old = filled.get("s0")
    assert old is not None
    new = evolve(old, status=R, updated_at=old.updated_at + timedelta(seconds=1))
    filled.put(new)
    assert len(filled) == 6
    assert filled.get("s0") is new
    assert filled.count_by_status() == {P: 1, R: 3, C: 1, F: 1}
    assert filled.count_created_before(us(100)) == 6


def test_delete_returns_the_removed_session_and_unindexes_it(
    filled: InMemorySessionStore,
) -> None:
    s2 = filled.get("s2")
    assert filled.delete("s2") is s2
    assert filled.delete("s2") is None
    assert filled.delete("nope") is None
    assert len(filled) == 5
    assert "s2" not in filled
    assert filled.count_by_status()[C] == 0
    assert filled.oldest(C) is None
    assert filled.created_before(us(100)) == ["s0", "s1", "s3", "s4", "s5"]


def test_clear_empties_store_and_indexes(filled: InMemorySessionStore) -> None:
    filled.clear()
    assert len(filled) == 0
    assert filled.count_by_status() == {P: 0, R: 0, C: 0, F: 0}
    assert filled.created_micros_range() is None
    assert filled.created_micros_sum() == 0
    assert filled.count_created_before(us(100)) == 0
    assert list(filled.values()) == []


class TaggedStore(InMemorySessionStore):
    """A subclass with its own constructor arguments and state."""

    def __init__(self, tag: str) -> None:
        super().__init__()
        self.tag = tag


def test_clear_works_for_a_subclass_and_keeps_its_own_state() -> None:
    store = TaggedStore("replica-1")
    store.put(make("a", R))
    store.clear()
    assert store.tag == "replica-1"
    assert len(store) == 0
    assert store.count_by_status()[R] == 0
    assert store.count_updated_before(R, us(100)) == 0
    store.put(make("a", R))  # the emptied indexes take new sessions
    assert store.oldest(R) == store.get("a")


def test_count_by_status_lists_every_status(filled: InMemorySessionStore) -> None:
    assert filled.count_by_status() == {P: 2, R: 2, C: 1, F: 1}
    assert InMemorySessionStore().count_by_status() == {P: 0, R: 0, C: 0, F: 0}


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(-1, 0), (0, 0), (0.000001, 1), (2, 2), (2.5, 3), (5, 5), (5.000001, 6), (99, 6)],
)
def test_count_created_before_is_strict(
    filled: InMemorySessionStore, seconds: float, expected: int
) -> None:
    assert filled.count_created_before(us(seconds)) == expected


def test_created_sum_and_range_follow_puts_and_deletes(filled: InMemorySessionStore) -> None:
    assert filled.created_micros_sum() == sum(us(i) for i in range(6))
    assert filled.created_micros_range() == (us(0), us(5))
    filled.delete("s0")
    filled.delete("s5")
    assert filled.created_micros_sum() == sum(us(i) for i in range(1, 5))
    assert filled.created_micros_range() == (us(1), us(4))


def test_oldest_per_status_and_ties_broken_by_id(store: InMemorySessionStore) -> None:
    store.put(make("b", P, created_s=5))
    store.put(make("z", P, created_s=3))
    store.put(make("a", P, created_s=3))
    store.put(make("q", F, created_s=1))
    assert store.oldest(P) == store.get("a")
    assert store.oldest(F) == store.get("q")
    assert store.oldest(R) is None
    assert store.oldest(C) is None


def test_created_before_lists_ids_oldest_first_and_filters_by_status(
    filled: InMemorySessionStore,
) -> None:
    assert filled.created_before(us(3)) == ["s0", "s1", "s2"]
    assert filled.created_before(us(4.000001)) == ["s0", "s1", "s2", "s3", "s4"]
    assert filled.created_before(us(100), P) == ["s0", "s4"]
    assert filled.created_before(us(4), P) == ["s0"]
    assert filled.created_before(us(0)) == []


def test_count_updated_before_tracks_updated_at_not_last_accessed(
    store: InMemorySessionStore,
) -> None:
    store.put(make("r1", R, created_s=0, updated_s=10))
    store.put(make("r2", R, created_s=0, updated_s=20))
    store.put(make("p1", P, created_s=0, updated_s=0))
    assert store.count_updated_before(R, us(10)) == 0
    assert store.count_updated_before(R, us(10.000001)) == 1
    assert store.count_updated_before(R, us(21)) == 2
    assert store.count_updated_before(P, us(1)) == 1
    r1 = store.get("r1")
    assert r1 is not None
    # a read touches last_accessed only: the update index must not move
    store.put(evolve(r1, last_accessed=T0 + timedelta(seconds=50)))
    assert store.count_updated_before(R, us(10.000001)) == 1
    # an update moves it
    store.put(evolve(r1, updated_at=T0 + timedelta(seconds=50)))
    assert store.count_updated_before(R, us(21)) == 1


def test_page_walks_creation_order_with_a_cursor(filled: InMemorySessionStore) -> None:
    first = filled.page(None, None, 4)
    assert [s.session_id for s in first] == ["s0", "s1", "s2", "s3"]
    cursor = (to_micros(first[-1].created_at), first[-1].session_id)
    assert [s.session_id for s in filled.page(None, cursor, 4)] == ["s4", "s5"]
    assert [s.session_id for s in filled.page(P, None, 10)] == ["s0", "s4"]
    assert [s.session_id for s in filled.page(R, (us(1), "s1"), 10)] == ["s5"]
    assert filled.page(None, None, 0) == []


def test_values_in_creation_order_and_safe_to_delete_while_iterating(
    filled: InMemorySessionStore,
) -> None:
    assert [s.session_id for s in filled.values()] == [f"s{i}" for i in range(6)]
    assert [s.session_id for s in filled.values(R)] == ["s1", "s5"]
    seen = []
    for session in filled.values():
        seen.append(session.session_id)
        filled.delete("s3")
    assert seen == ["s0", "s1", "s2", "s4", "s5"]
    assert len(filled) == 5


# A random walk of puts, replacements and deletes: every index query must equal a recount.
_op = st.tuples(
    st.sampled_from(["put", "delete"]),
    st.integers(0, 7),  # id
    st.sampled_from(list(GenerationStatus)),
    st.integers(0, 5),  # created, seconds
    st.integers(0, 5),  # updated offset, seconds
)


@given(st.lists(_op, max_size=40), st.integers(-1, 11))
@settings(max_examples=150, deadline=None)
def test_indexes_always_equal_a_recount(
    ops: list[tuple[str, int, GenerationStatus, int, int]], probe_s: int
) -> None:
    store = InMemorySessionStore()
    model: dict[str, GenerationSession] = {}
    for kind, n, status, created_s, offset_s in ops:
        sid = f"id{n}"
        if kind == "put":
            session = make(sid, status, created_s=created_s, updated_s=created_s + offset_s)
            store.put(session)
            model[sid] = session
        else:
            assert store.delete(sid) == model.pop(sid, None)
    probe = us(probe_s)

    def key(s: GenerationSession) -> tuple[int, str]:
        return (to_micros(s.created_at), s.session_id)

    ordered = sorted(model.values(), key=key)
    assert len(store) == len(model)
    assert [s.session_id for s in store.values()] == [s.session_id for s in ordered]
    assert store.count_by_status() == {
        st_: sum(s.status is st_ for s in model.values()) for st_ in GenerationStatus
    }
    assert store.count_created_before(probe) == sum(key(s)[0] < probe for s in ordered)
    assert store.created_micros_sum() == sum(key(s)[0] for s in ordered)
    assert store.created_micros_range() == (
        (key(ordered[0])[0], key(ordered[-1])[0]) if ordered else None
    )
    for status in GenerationStatus:
        mine = [s for s in ordered if s.status is status]
        assert store.oldest(status) == (mine[0] if mine else None)
        assert store.created_before(probe, status) == [
            s.session_id for s in mine if key(s)[0] < probe
        ]
        assert store.count_updated_before(status, probe) == sum(
            to_micros(s.updated_at) < probe for s in mine
        )
