"""RedisSessionStore: the session store's rule-bearing operations, each one Lua script.

Keys (all under one hash tag, `{prefix}`, so a Redis Cluster keeps them in one slot):

- `{p}:s:<id>`     a hash per session (see codec)
- `{p}:c`          every session by creation, `{p}:c:<status>` the same per status
- `{p}:u:<status>` sessions by last update, per status (stuck detection)
- `{p}:sum`        the sum of creation times (average age)
- `{p}:ik`, `{p}:it` Idempotency-Keys by name and by the time they were recorded (create.lua)

Sorted sets are scored 0 with members `<16-digit micros>:<id>`, so lexical order is the memory
store's (micros, id) order and every count is a ZLEXCOUNT, O(log n). Nothing here uses KEYS or
SCAN; removals run in bounded batches. The caller passes its clock's time into every call, so
an injected clock gives the same figures as the memory store.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib import resources
from typing import Any

import redis

from sidecar.core.config import CapacityPolicy
from sidecar.core.errors import InvalidTransitionError, SessionNotFoundError
from sidecar.core.models import GenerationRequest, GenerationSession, GenerationStatus
from sidecar.core.rules import ExpiryRule
from sidecar.store.base import (
    BATCH,
    KEEP,
    Change,
    CreateOutcome,
    Cursor,
    IdempotencyKey,
    KeyOutcome,
    StaleScenesError,
    StoreFigures,
)
from sidecar.store.errors import StoreUnavailableError, UnreadableSessionError
from sidecar.store.redis.codec import (
    decode_session,
    encode_error,
    encode_progress,
    encode_request,
    encode_scenes,
)

__all__ = ["RedisSessionStore", "reachable"]

logger = logging.getLogger(__name__)

_OPERATIONS = ("create", "update", "touch", "remove", "expire", "purge")


_FIELD_NAMES = {"pg": "progress", "sc": "scenes", "er": "error_message"}
_FOUND = {
    b"replayed": KeyOutcome.REPLAYED,
    b"reused": KeyOutcome.REUSED,
    b"spent": KeyOutcome.SPENT,
}


# Index members hold a time as 16 digits, so the store can hold times from the epoch up to
# this bound (2286-11-20): a time outside them would corrupt the indexes its member goes into.
_TIMES = 10**16 - 1


def _time(us: int) -> int:
    """`us` if a session can be stamped with it; ValueError (a clock far off) if not."""
    if not 0 <= us < _TIMES:
        raise ValueError(
            f"time {us} us since the epoch is outside what the Redis store can index "
            "(1970-01-01 to 2286-11-20); check the clock"
        )
    return us


def _bound(us: int) -> int:
    """A cutoff or cursor time, brought within the stored times' range: every stored time lies
    in [0, _TIMES), so a comparison with it keeps its answer."""
    return min(max(us, 0), _TIMES)


def _pad(us: int) -> bytes:
    return b"%016d" % _bound(us)


def _csv(statuses: Sequence[GenerationStatus]) -> str:
    return ",".join(s.value for s in statuses)


def _text(raw: bytes | str) -> str:
    return raw if isinstance(raw, str) else raw.decode()


def _member_us(member: bytes) -> int:
    return int(member[:16])


# Refusals that say the server cannot take commands now, not that the command was wrong: a
# replica left read-only by a failover, a full server, a lost master, another client's long
# script (BUSY), a cluster that is down or resharding; or not as configured: an ACL user
# without the commands (NOPERM), a database the server does not have (SELECT at connect).
# (LOADING and NOAUTH are ConnectionError.)
_REFUSED_FOR_NOW = ("BUSY ", "DB index is out of range")
_REFUSALS = (
    redis.exceptions.NoPermissionError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.MasterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterDownError,
)


@contextmanager
def reachable(operation: str) -> Iterator[None]:
    """Turn the client's connection and timeout errors, and the server's refusals for want of
    a usable state, into StoreUnavailableError."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError, *_REFUSALS) as exc:
        raise StoreUnavailableError(f"{operation}: {exc}") from None
    except redis.ResponseError as exc:
        if str(exc).startswith(_REFUSED_FOR_NOW):
            raise StoreUnavailableError(f"{operation}: {exc}") from None
        raise


def _load(name: str) -> str:
    lua = resources.files("sidecar.store.redis").joinpath("lua")
    return lua.joinpath("_lib.lua").read_text() + "\n" + lua.joinpath(f"{name}.lua").read_text()


class RedisSessionStore:
    """Sessions in Redis; safe to share between threads and between processes."""

    shared = True  # other replicas use it: a stopping replica leaves it as it is

    def __init__(self, client: redis.Redis, prefix: str = "sidecar") -> None:
        self._client = client
        self._tag = "{" + prefix + "}"
        # register_script runs EVALSHA and sends the script again on NOSCRIPT (after a restart).
        self._scripts = {name: client.register_script(_load(name)) for name in _OPERATIONS}

    @property
    def client(self) -> redis.Redis:
        return self._client

    def _run(self, name: str, *args: Any) -> Any:
        with reachable(name):
            return self._scripts[name](keys=[self._tag], args=list(args))

    @staticmethod
    def _removed(reply: Sequence[Any]) -> list[GenerationSession]:
        """The sessions a script removed. One whose record does not decode is gone all the
        same: it is logged and left out, so the rest of the batch is still reported."""
        removed: list[GenerationSession] = []
        for sid, fields in reply:
            if not fields:
                continue
            try:
                removed.append(decode_session(_text(sid), fields))
            except UnreadableSessionError as exc:
                logger.warning(
                    "removed session %s, whose stored record cannot be read (%s); it is not "
                    "counted or reported",
                    exc.session_id,
                    exc.reason,
                )
        return removed

    # ------------------------------------------------------------------ rule-bearing operations

    def create(
        self,
        session_id: str,
        request: GenerationRequest,
        now_us: int,
        *,
        capacity: int,
        policy: CapacityPolicy,
        eviction_order: Sequence[Sequence[GenerationStatus]],
        expiry: Sequence[ExpiryRule],
        batch: int = BATCH,
        idempotency: IdempotencyKey | None = None,
    ) -> CreateOutcome:
        """Insert a pending session; at capacity expire first, then evict or reject.

        A remembered Idempotency-Key creates nothing; a new one is recorded with the session.
        """
        key = idempotency
        outcome, expired, evicted, original, fields = self._run(
            "create",
            session_id,
            _time(now_us),
            capacity,
            policy.value,
            ";".join(_csv(group) for group in eviction_order),
            self._rules(expiry),
            batch,
            encode_request(request),
            "" if key is None else key.key,
            "" if key is None else key.fingerprint,
            0 if key is None else key.forget_before_us,
            0 if key is None else key.max_keys,
        )
        if outcome in _FOUND:
            original_id = original.decode()
            stored = decode_session(original_id, fields) if fields else None
            return CreateOutcome(stored, [], [], _FOUND[outcome], original_id)
        found = None if key is None else KeyOutcome.NEW
        session = None
        if outcome == b"created":
            session = decode_session(
                session_id,
                {
                    b"st": b"pending",
                    b"c": b"%d" % now_us,
                    b"u": b"%d" % now_us,
                    b"a": b"%d" % now_us,
                    b"rq": encode_request(request),
                    b"sc": b"[]",
                    b"pg": b"",
                    b"er": b"",
                },
            )
        return CreateOutcome(session, self._removed(expired), self._removed(evicted), found)

    def update(
        self, session_id: str, now_us: int, change: Change
    ) -> tuple[GenerationStatus, GenerationSession]:
        """Apply `change` if the session's status allows all of it; (previous status, new)."""
        # In WORK_FIELDS order, so the first one that changes is the one a refusal names.
        pairs: list[bytes | str] = []
        if change.progress is not KEEP:
            pairs += ["pg", encode_progress(change.progress)]  # type: ignore[arg-type]
        if change.scenes is not KEEP:
            pairs += ["sc", encode_scenes(change.scenes)]  # type: ignore[arg-type]
        if change.error_message is not KEEP:
            pairs += ["er", encode_error(change.error_message)]  # type: ignore[arg-type]
        expect = change.expect_scenes
        reply = self._run(
            "update",
            session_id,
            _time(now_us),
            "" if change.status is None else change.status.value,
            _csv(change.leave_from),
            _csv(change.work_statuses),
            b"" if expect is None else encode_scenes(expect),
            "" if change.updated_before_us is None else _bound(change.updated_before_us),
            *pairs,
        )
        match reply[0]:
            case b"ok":
                return GenerationStatus(reply[1].decode()), decode_session(session_id, reply[2])
            case b"missing":
                raise SessionNotFoundError(session_id)
            case b"stale":
                raise StaleScenesError(session_id)
            case _:
                current, what = GenerationStatus(reply[1].decode()), reply[2].decode()
                if what.startswith("work:"):
                    field = _FIELD_NAMES[what.removeprefix("work:")]
                    raise InvalidTransitionError(session_id, current, field)
                raise InvalidTransitionError(session_id, current, GenerationStatus(what))

    def touch(self, session_id: str, now_us: int) -> GenerationSession | None:
        """The session with its last access set to `now_us`, or None."""
        fields = self._run("touch", session_id, _time(now_us))
        return decode_session(session_id, fields) if fields else None

    def remove(self, session_id: str) -> GenerationSession | None:
        """Remove one session; what was removed (only this caller gets it), or None."""
        fields = self._run("remove", session_id)
        if not fields:
            return None
        try:
            return decode_session(session_id, fields)
        except UnreadableSessionError as exc:
            raise UnreadableSessionError(
                session_id, f"{exc.reason} (the session was removed)"
            ) from exc

    def expire(self, rules: Sequence[ExpiryRule], batch: int = BATCH) -> list[GenerationSession]:
        """Remove up to `batch` expired sessions; each one removed is returned to one caller."""
        return self._removed(self._run("expire", self._rules(rules), batch))

    def purge(
        self, status: GenerationStatus | None, cutoff_us: int | None, batch: int = BATCH
    ) -> list[GenerationSession]:
        """Remove up to `batch` sessions in `status` (None: any) created before `cutoff_us`."""
        return self._removed(
            self._run(
                "purge",
                "" if status is None else status.value,
                "" if cutoff_us is None else _bound(cutoff_us),
                max(batch, 0),
            )
        )

    @staticmethod
    def _rules(rules: Sequence[ExpiryRule]) -> str:
        return ";".join(
            f"{'' if r.status is None else r.status.value}:{_bound(r.cutoff_us)}" for r in rules
        )

    # ------------------------------------------------------------------ reads

    def get(self, session_id: str) -> GenerationSession | None:
        with reachable("get"):
            fields = self._client.hgetall(f"{self._tag}:s:{session_id}")
        return decode_session(session_id, fields) if fields else None

    def __len__(self) -> int:
        with reachable("count"):
            return int(self._client.zcard(f"{self._tag}:c"))

    def figures(
        self,
        cutoffs_us: Sequence[int],
        stuck_status: GenerationStatus,
        stuck_cutoff_us: int,
    ) -> StoreFigures:
        """Counts by status, by creation cutoff, stuck, oldest: one MULTI round trip, O(log n)."""
        tag = self._tag
        statuses = list(GenerationStatus)
        pipe = self._client.pipeline(transaction=True)  # one consistent instant
        pipe.zcard(f"{tag}:c")
        for status in statuses:
            pipe.zcard(f"{tag}:c:{status.value}")
        for cutoff in cutoffs_us:
            pipe.zlexcount(f"{tag}:c", b"-", b"(" + _pad(cutoff))
        pipe.zlexcount(f"{tag}:u:{stuck_status.value}", b"-", b"(" + _pad(stuck_cutoff_us))
        for status in statuses:
            pipe.zrange(f"{tag}:c:{status.value}", 0, 0)
        pipe.zrange(f"{tag}:c", 0, 0)
        pipe.zrange(f"{tag}:c", -1, -1)
        pipe.hmget(f"{tag}:sum", "sec", "us")
        with reachable("figures"):
            out = pipe.execute()
        n = len(statuses)
        total, counts = int(out[0]), out[1 : 1 + n]
        before = [int(x) for x in out[1 + n : 1 + n + len(cutoffs_us)]]
        rest = out[1 + n + len(cutoffs_us) :]
        stuck, firsts, first, last, (sec, us) = int(rest[0]), rest[1 : 1 + n], *rest[1 + n :]
        return StoreFigures(
            total=total,
            by_status={s: int(c) for s, c in zip(statuses, counts, strict=True)},
            created_before=before,
            stuck=stuck,
            oldest_created_us={
                s: _member_us(f[0]) for s, f in zip(statuses, firsts, strict=True) if f
            },
            created_range_us=(_member_us(first[0]), _member_us(last[0])) if first else None,
            created_sum_us=int(sec or 0) * 1_000_000 + int(us or 0),
        )

    def page(
        self, status: GenerationStatus | None, after: Cursor | None, limit: int
    ) -> list[GenerationSession]:
        """Up to `limit` sessions in creation order, just after `after`; one pipelined read."""
        key = f"{self._tag}:c" if status is None else f"{self._tag}:c:{status.value}"
        low = b"-" if after is None else b"(" + _pad(after[0]) + b":" + after[1].encode()
        return self._read_members(key, low, b"+", limit, "page")

    def _read_members(
        self, key: str, low: bytes, high: bytes, limit: int, operation: str
    ) -> list[GenerationSession]:
        """The sessions of up to `limit` index members from `low` to `high`, in index order."""
        if limit <= 0:
            return []  # Redis would read LIMIT 0 -1 as all of them
        with reachable(operation):
            members = self._client.zrangebylex(key, low, high, start=0, num=limit)
            ids = [_text(m[17:]) for m in members]
            pipe = self._client.pipeline(transaction=False)
            for sid in ids:
                pipe.hgetall(f"{self._tag}:s:{sid}")
            rows = pipe.execute()
        # A session removed between the two reads is skipped.
        return [decode_session(sid, f) for sid, f in zip(ids, rows, strict=True) if f]

    def page_stuck(
        self,
        status: GenerationStatus,
        updated_before_us: int,
        after: Cursor | None,
        limit: int,
    ) -> list[GenerationSession]:
        """Up to `limit` sessions in `status` last updated strictly before `updated_before_us`,
        oldest update first, just after `after`: a lexical range of `u:<status>`, then one
        pipelined read of the sessions."""
        key = f"{self._tag}:u:{status.value}"
        low = b"-" if after is None else b"(" + _pad(after[0]) + b":" + after[1].encode()
        return self._read_members(key, low, b"(" + _pad(updated_before_us), limit, "page_stuck")

    def close(self) -> None:
        """Close the client's connections; the sessions stay in Redis for the other replicas."""
        self._client.close()

    def clear(self) -> int:
        """Remove every session of this prefix, batch by batch; how many."""
        removed = 0
        while batch := self.purge(None, None):
            removed += len(batch)
        return removed
