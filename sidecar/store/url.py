"""A SIDECAR_STORE URL: checked, redacted, and named as the `store` metric label.

Pure string work, importable without the `redis` extra: settings check a URL before anything
connects. The password in a URL never leaves this module in clear: `redact` is what logs,
errors and the admin config show.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

__all__ = ["SCHEMES", "check_prefix", "check_url", "redact", "store_label"]

SCHEMES = ("redis", "rediss", "unix")
_PREFIX = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_DB = re.compile(r"[0-9]{1,5}")
# What a rediss:// URL may say about TLS (redis-py's SSL connection arguments).
_TLS_QUERY = frozenset({"ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile"})


def redact(url: str) -> str:
    """`url` with any password replaced by `***` (the user name stays), and every query value
    too (redis-py takes a password there as well). Never raises, whatever `url` holds.

    Worked on the raw text, not on what urlsplit makes of it: a password holding `#`, `/` or
    `?` (unencoded) ends urlsplit's host part early, so that part would hold no `@`.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url if "@" not in url and "?" not in url else "***"
    userinfo, at, after = rest.rpartition("@")
    if at and ":" in userinfo:
        rest = f"{userinfo.split(':', 1)[0]}:***@{after}"
    elif at:
        rest = f"{userinfo}@{after}"
    base, question, query = rest.partition("?")
    if question:
        hidden = "&".join(
            f"{name}=***" if value else name
            for name, _, value in (item.partition("=") for item in query.split("&"))
        )
        base = f"{base}?{hidden}"
    return f"{scheme}://{base}"


def check_url(url: str) -> str:
    """`url` if it names a Redis server this client can reach; ValueError saying why not.

    The message never contains the password.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError(f"not a valid URL: {redact(url)}") from None
    # As written: urlsplit lowercases the scheme, redis-py does not (REDIS:// fails there).
    scheme = url.split(":", 1)[0]
    if scheme not in SCHEMES:
        allowed = ", ".join(f"{s}://" for s in SCHEMES)
        raise ValueError(f"unknown scheme {scheme!r}: use memory or {allowed}")
    if scheme == "unix":
        if not parts.path:
            raise ValueError("unix:// needs the socket's path, e.g. unix:///run/redis.sock")
    elif not parts.hostname:
        raise ValueError(f"no host in {redact(url)}")
    elif port == 0:
        raise ValueError(f"port 0 in {redact(url)}")
    # redis-py reads a path that is not a number as database 0, silently.
    elif parts.path.strip("/") and not _DB.fullmatch(parts.path.strip("/")):
        raise ValueError(f"the path names the database, a number such as /0, in {redact(url)}")
    _check_query(parts.query, scheme, redact(url))
    return url


def _check_query(query: str, scheme: str, shown: str) -> None:
    """Only the query parameters the sidecar leaves to the URL, each once and well formed.

    A timeout in the URL would override SIDECAR_STORE_TIMEOUT_SECONDS, and redis-py fails on a
    malformed value (or an unknown name) only when it first connects.
    """
    allowed = _TLS_QUERY | {"db"} if scheme == "rediss" else {"db"}
    for name, values in parse_qs(query, keep_blank_values=True).items():
        if name not in allowed:
            names = ", ".join(sorted(allowed))
            raise ValueError(f"query parameter {name!r} not taken (only {names}) in {shown}")
        if len(values) > 1:
            raise ValueError(f"query parameter {name!r} given more than once in {shown}")
        value = values[0]
        if name == "db" and not _DB.fullmatch(value):
            raise ValueError(f"db must be a number in {shown}")
        if name == "ssl_cert_reqs" and value not in ("none", "optional", "required"):
            raise ValueError(f"ssl_cert_reqs must be none, optional or required in {shown}")


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
