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
import re

from sidecar.core.config import ManagerConfig
from sidecar.core.models import REQUEST, GenerationRequest
from sidecar.core.rules import micros
from sidecar.store.base import IdempotencyKey

__all__ = [
    "IDEMPOTENCY_KEY",
    "KEYS_PER_SESSION",
    "MAX_KEY_LENGTH",
    "KeyFormatError",
    "fingerprint",
    "idempotency_rule",
    "parse_key",
]

# Keys remembered per session of capacity: room for every held session's key and as many
# again of sessions since removed (whose repeats answer 409 rather than create again).
KEYS_PER_SESSION = 2
MAX_KEY_LENGTH = 255
IDEMPOTENCY_KEY = "Idempotency-Key"  # the header's name
# An RFC 8941 sf-string, as the Idempotency-Key draft requires: visible ASCII and spaces
# between double quotes, with \" and \\ the only escapes.
_SF_STRING = re.compile(r'"((?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\\"])*)"')
_ESCAPE = re.compile(r"\\(.)")


class KeyFormatError(ValueError):
    """An Idempotency-Key header value that is not a key; `msg` and `kind` as a 422 says."""

    def __init__(self, msg: str, kind: str) -> None:
        super().__init__(f"Idempotency-Key {msg}")
        self.msg = msg
        self.kind = kind


def parse_key(value: str) -> str:
    """The key an Idempotency-Key header value holds (the sf-string's content); KeyFormatError
    unless it is one quoted string of 1 to MAX_KEY_LENGTH characters. The server reads the
    header with it, and the client checks a key it is given before sending it."""
    match = _SF_STRING.fullmatch(value.strip(" \t"))
    if match is None:
        raise KeyFormatError(
            'must be one quoted string of visible ASCII characters, such as "6f1c-4e2a"',
            "string_type",
        )
    key = _ESCAPE.sub(r"\1", match.group(1))
    if not 1 <= len(key) <= MAX_KEY_LENGTH:
        raise KeyFormatError(f"must hold 1 to {MAX_KEY_LENGTH} characters", "string_length")
    return key


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
