"""Where the shared store is: a checked SIDECAR_STORE URL, a client for it, the URL as logged.

The password in a URL never leaves this module in clear: `redact` is what logs, errors and the
admin config show.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

__all__ = ["SCHEMES", "StoreUnavailableError", "check_prefix", "check_url", "connect", "redact"]

SCHEMES = ("redis", "rediss", "unix")
_PREFIX = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


class StoreUnavailableError(Exception):
    """The shared store did not answer within its timeout (or refused the connection)."""


def redact(url: str) -> str:
    """`url` with any password replaced by `***` (the user name stays)."""
    # From the raw netloc, so that a URL too broken to parse still loses its password.
    parts = urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def check_url(url: str) -> str:
    """`url` if it names a Redis server this client can reach; ValueError saying why not.

    The message never contains the password.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError(f"not a valid URL: {redact(url)}") from None
    if parts.scheme not in SCHEMES:
        allowed = ", ".join(f"{s}://" for s in SCHEMES)
        raise ValueError(f"unknown scheme {parts.scheme!r}: use memory or {allowed}")
    if parts.scheme == "unix":
        if not parts.path:
            raise ValueError("unix:// needs the socket's path, e.g. unix:///run/redis.sock")
    elif not parts.hostname:
        raise ValueError(f"no host in {redact(url)}")
    elif port == 0:
        raise ValueError(f"port 0 in {redact(url)}")
    return url


def check_prefix(prefix: str) -> str:
    """A key prefix: 1 to 64 of letters, digits and _ . : - (braces would break the hash tag)."""
    if not _PREFIX.fullmatch(prefix):
        raise ValueError("must be 1 to 64 letters, digits or _ . : -")
    return prefix


def connect(url: str, timeout: float) -> redis.Redis:
    """A client whose every call gives up after `timeout` seconds: no retries behind our back
    (redis-py retries three times by default, which would multiply the wait)."""
    return redis.Redis.from_url(
        check_url(url),
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )
