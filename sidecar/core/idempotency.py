"""The Idempotency-Key rules of a create (IETF httpapi Idempotency-Key header draft).

At most one session per key: the store looks a key up and records it in the same atomic step
as the create. What is decided here, and handed to the store as data: a request's
fingerprint (the same request is the same validated GenerationRequest, whatever its JSON
spelling), how long a key is remembered (as long as any session may live,
`session_max_age_seconds`, counted from the create) and how many keys at most
(`KEYS_PER_SESSION` per unit of `max_sessions`; past that the oldest are forgotten first).
"""

from __future__ import annotations

import hashlib

from sidecar.core.config import ManagerConfig
from sidecar.core.models import REQUEST, GenerationRequest
from sidecar.core.rules import micros
from sidecar.store.base import IdempotencyKey

__all__ = ["KEYS_PER_SESSION", "MAX_KEY_LENGTH", "fingerprint", "idempotency_rule"]

# Keys remembered per session of capacity: room for every held session's key and as many
# again of sessions since removed (whose repeats answer 409 rather than create again).
KEYS_PER_SESSION = 2
MAX_KEY_LENGTH = 255


def fingerprint(request: GenerationRequest) -> str:
    """The SHA-256 of the request's canonical JSON, as hex."""
    return hashlib.sha256(REQUEST.dump_json(request)).hexdigest()


def idempotency_rule(
    key: str, request: GenerationRequest, now_us: int, config: ManagerConfig
) -> IdempotencyKey:
    """The key, its request's fingerprint, and the remembering rules in force at `now_us`."""
    return IdempotencyKey(
        key=key,
        fingerprint=fingerprint(request),
        forget_before_us=now_us - micros(config.session_max_age_seconds),
        max_keys=KEYS_PER_SESSION * config.max_sessions,
    )
