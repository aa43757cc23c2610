"""What a request brings besides its body: query parameters, headers, path numbers, cursors.

Each reader checks its input strictly and raises a 422 problem naming where the bad value was
(`query`, `header` or `path`), so the views only ever see valid values.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from flask import request
from pydantic import ValidationError
from werkzeug.routing import IntegerConverter

from sidecar.core.idempotency import IDEMPOTENCY_KEY, KeyFormatError, parse_key
from sidecar.core.models import STATUS, GenerationStatus
from sidecar.core.rules import STUCK_STATUS
from sidecar.store import Cursor
from sidecar.web.problems import Problem, from_pydantic, validation_problem
from sidecar.web.routes import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

__all__ = [
    "IDEMPOTENCY_KEY",
    "PageQuery",
    "SceneNumber",
    "declared_length",
    "decode_cursor",
    "encode_cursor",
    "idempotency_key",
    "is_json",
    "page_query",
    "path_n_problem",
    "validated",
]

T = TypeVar("T")

_IDEMPOTENCY_ENVIRON = "HTTP_" + IDEMPOTENCY_KEY.upper().replace("-", "_")
_QUERY = frozenset({"status", "limit", "cursor", "stuck"})
_LIMIT = re.compile(r"[0-9]{1,7}")
_MAX_CURSOR = 512


def encode_cursor(cursor: Cursor) -> str:
    """An opaque, URL-safe form of a list position."""
    raw = json.dumps([cursor[0], cursor[1]], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(text: str) -> Cursor | None:
    """The position `encode_cursor` made, or None if `text` is not one."""
    if len(text) > _MAX_CURSOR:
        return None
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
        value = json.loads(raw)
    except (binascii.Error, ValueError):
        return None
    if (
        isinstance(value, list)
        and len(value) == 2
        and type(value[0]) is int
        and isinstance(value[1], str)
        and _encodable(value[1])
    ):
        return value[0], value[1]
    return None


def _encodable(text: str) -> bool:
    """False for text UTF-8 cannot hold (a lone surrogate, which JSON's \\ud800 can spell)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


class SceneNumber(IntegerConverter):
    """A scene number in a path: ASCII digits only.

    werkzeug's int converter takes any Unicode digit, so an Arabic-Indic one would be scene 1.
    Any run of ASCII digits matches, so a number out of range is the view's 422, never a 404.
    """

    regex = r"[0-9]+"

    def to_python(self, value: str) -> int:
        # int() refuses more than 4300 digits; a number that long is out of range anyway.
        return int(value) if len(value) <= 20 else 10**20


def is_json(content_type: str) -> bool:
    """Werkzeug's Request.is_json, on the raw header: application/json or application/*+json."""
    kind = content_type.partition(";")[0].strip().lower()
    if kind == "application/json":
        return True
    return kind.startswith("application/") and kind.endswith("+json")


def declared_length(environ: WSGIEnvironment) -> int | None:
    """The body's Content-Length, if it is a plain number and nothing else frames the body."""
    text = environ.get("CONTENT_LENGTH")
    if not text or not (text.isascii() and text.isdigit()) or "HTTP_TRANSFER_ENCODING" in environ:
        return None
    return int(text)


def validated(validate: Callable[[Any], T], data: Any) -> T:
    """`data` checked by `validate` (a TypeAdapter's or model's); a 422 if it does not pass."""
    try:
        return validate(data)
    except ValidationError as exc:
        raise from_pydantic(exc) from None


def idempotency_key() -> str | None:
    """The request's Idempotency-Key (the sf-string's content), None if it sent none; a 422
    if it is not one quoted string of 1 to MAX_KEY_LENGTH characters (a key sent twice
    reaches the app as one list, "a", "b", which is not one)."""
    # Straight from the WSGI environ (PEP 3333's HTTP_ name), as every POST asks.
    value = request.environ.get(_IDEMPOTENCY_ENVIRON)
    if value is None:
        return None
    try:
        return parse_key(value)
    except KeyFormatError as exc:
        raise validation_problem(
            [{"loc": [IDEMPOTENCY_KEY], "msg": exc.msg, "type": exc.kind}], prefix=("header",)
        ) from None


@dataclass(frozen=True, slots=True)
class PageQuery:
    """A listing's query: status, cursor, page size, and whether only stuck sessions."""

    status: GenerationStatus | None
    cursor: Cursor | None
    limit: int
    stuck: bool


def page_query() -> PageQuery:
    """The listing's query parameters, checked; a 422 naming each bad one."""
    args = request.args
    errors: list[dict[str, Any]] = [
        {"loc": [name], "msg": "unknown query parameter", "type": "extra_forbidden"}
        for name in args
        if name not in _QUERY
    ]
    errors += [
        {"loc": [name], "msg": "given more than once", "type": "repeated"}
        for name in sorted(_QUERY)
        if len(args.getlist(name)) > 1
    ]
    status: GenerationStatus | None = None
    if "status" in args:
        try:
            status = STATUS.validate_python(args["status"])
        except ValidationError:
            allowed = ", ".join(s.value for s in GenerationStatus)
            errors.append({"loc": ["status"], "msg": f"must be one of {allowed}", "type": "enum"})
    stuck = args.get("stuck", "false")
    if stuck not in ("true", "false"):
        errors.append({"loc": ["stuck"], "msg": "must be true or false", "type": "bool_parsing"})
    elif stuck == "true" and status not in (None, STUCK_STATUS):
        msg = f"stuck sessions are {STUCK_STATUS.value}; leave status out or ask for that"
        errors.append({"loc": ["status"], "msg": msg, "type": "stuck_status"})
    limit = DEFAULT_PAGE_SIZE
    if "limit" in args:
        text = args["limit"]
        if _LIMIT.fullmatch(text) and 1 <= int(text) <= MAX_PAGE_SIZE:
            limit = int(text)
        else:
            errors.append(
                {
                    "loc": ["limit"],
                    "msg": f"must be an integer from 1 to {MAX_PAGE_SIZE}",
                    "type": "limit",
                }
            )
    cursor: Cursor | None = None
    if "cursor" in args:
        cursor = decode_cursor(args["cursor"])
        if cursor is None:
            errors.append(
                {
                    "loc": ["cursor"],
                    "msg": "not a cursor this API returned (next_cursor)",
                    "type": "cursor",
                }
            )
    if errors:
        raise validation_problem(errors, prefix=("query",))
    return PageQuery(status, cursor, limit, stuck == "true")


def path_n_problem(msg: str, kind: str) -> Problem:
    """A 422 for a scene number in the path."""
    return validation_problem([{"loc": ["n"], "msg": msg, "type": kind}], prefix=("path",))
