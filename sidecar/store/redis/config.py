"""The live settings replicas share: the PATCHed values as one Redis hash, with a version.

`{p}:cfg` holds each setting a PATCH changed (JSON values) and `{p}:cfg:v` a counter that
every save increments in the same MULTI. A replica compares the counter with the one it last
applied (one GET, O(1)) before a request, and reloads the hash only when it moved.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sidecar.store.redis.store import reachable

if TYPE_CHECKING:
    import redis

__all__ = ["RedisSharedSettings"]

logger = logging.getLogger(__name__)


class RedisSharedSettings:
    """Live settings shared through Redis under one store's prefix (and hash tag)."""

    def __init__(self, client: redis.Redis, prefix: str = "sidecar") -> None:
        self._client = client
        tag = "{" + prefix + "}"
        self._values = f"{tag}:cfg"
        self._version = f"{tag}:cfg:v"

    def version(self) -> int:
        """How many saves there have been (0: none); StoreUnavailableError."""
        with reachable("config-version"):
            raw = self._client.get(self._version)
        return int(raw) if raw else 0

    def load(self) -> tuple[int, dict[str, Any]]:
        """(version, the values saved so far), read in one MULTI."""
        pipe = self._client.pipeline(transaction=True)
        pipe.get(self._version)
        pipe.hgetall(self._values)
        with reachable("config-load"):
            raw_version, values = pipe.execute()
        version = int(raw_version or 0)
        decoded: dict[str, Any] = {}
        for key, value in values.items():
            try:
                decoded[key.decode()] = json.loads(value)
            except ValueError:  # edited by hand: the others still apply
                logger.warning(
                    "shared setting %r of version %d does not decode as JSON; left out",
                    key,
                    version,
                )
        return version, decoded

    def save(self, changes: Mapping[str, Any]) -> int:
        """Store `changes` (JSON-ready values) and bump the version; the new version."""
        pipe = self._client.pipeline(transaction=True)
        pipe.hset(self._values, mapping={k: json.dumps(v) for k, v in changes.items()})
        pipe.incr(self._version)
        with reachable("config-save"):
            _, version = pipe.execute()
        return int(version)
