"""A SIDECAR_STORE URL: checked, redacted, and named as the `store` metric label.

Pure string work, importable without the `redis` extra: settings check a URL before anything
connects. The password in a URL never leaves this module in clear: `redact` is what logs,
errors and the admin config show.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit, urlunsplit

__all__ = ["SCHEMES", "check_prefix", "check_url", "redact", "store_label"]

SCHEMES = ("redis", "rediss", "unix")
_PREFIX = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


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


def _db(url: str) -> str:
    parts = urlsplit(url)
    query = parse_qs(parts.query).get("db")
    if query:
        return query[0]
    if parts.scheme != "unix" and parts.path.strip("/"):
        return parts.path.strip("/")
    return "0"


def store_label(url: str, prefix: str) -> str:
    """The `store` label of a Redis store: `redis:<host>:<port>/<db>/<prefix>`, or
    `redis:unix:<path>/<db>/<prefix>` for a socket; never the user name or the password."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"redis:unix:{parts.path}/{_db(url)}/{prefix}"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"redis:{host}:{parts.port or 6379}/{_db(url)}/{prefix}"
