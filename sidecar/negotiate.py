"""What a scraper asked for: the exposition format (Accept) and gzip (Accept-Encoding).

prometheus_client negotiates both (`choose_encoder`, `gzip_accepted`); these keep what it
cannot read out of its way, and weigh gzip as RFC 9110 says.
"""

from __future__ import annotations

import re

__all__ = ["wants_gzip", "well_formed_accept"]

# A media range's version as prometheus_client can compare it: ASCII digits and dots only
# (int() would also take full-width digits, which then end up in a response header).
_VERSION = re.compile(r"[0-9]{1,9}(?:\.[0-9]{1,9}){0,2}", re.ASCII)
_EXPOSITION_TYPES = frozenset({"application/openmetrics-text", "text/plain"})


def well_formed_accept(accept: str | None) -> str:
    """`accept` without the exposition media ranges whose parameters prometheus_client cannot
    read (a version that is not dotted ASCII digits, a value outside visible ASCII).

    prometheus_client's `choose_encoder` raises on `version=abc` and echoes any version into
    the Content-Type; a range dropped here falls back to what the rest of the header asks
    for, in the end the text format. Clients get the text format, never a 500 or a 406.
    """
    if not accept:
        return ""
    kept = []
    for media_range in accept.split(","):
        kind, *params = media_range.split(";")
        if kind.strip() in _EXPOSITION_TYPES and not all(map(_readable_param, params)):
            continue
        kept.append(media_range)
    return ",".join(kept)


def wants_gzip(accept_encoding: str | None) -> bool:
    """True if `accept_encoding` lists gzip with a weight above 0 (RFC 9110 12.5.3).

    prometheus_client's `gzip_accepted` ignores weights, so `gzip;q=0` (gzip refused) got
    gzip. A weight that does not parse counts as a refusal: identity is always acceptable.
    """
    for coding in (accept_encoding or "").split(","):
        name, *params = coding.split(";")
        if name.strip().lower() != "gzip":
            continue
        weight = 1.0
        for param in params:
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        return 0 < weight <= 1
    return False


def _readable_param(param: str) -> bool:
    if not (param.isascii() and param.isprintable()):
        return False
    key, _, value = param.strip().partition("=")
    return key != "version" or _VERSION.fullmatch(value) is not None
