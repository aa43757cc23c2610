"""Logging setup: one line per event, as text or JSON, on stderr.

Secrets stay out of the log by construction, not by searching lines for them: the sidecar's
own lines name a request by its method, the route rule that served it (`/api/v1/sessions/
<session_id>`, never the raw path or query), its status and duration, and nothing logs a
request's headers or body. The one request text a library logs, waitress's "... while serving
<path>", loses its path here (`_WithoutRequestText`). Tokens are never handed to this module.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

__all__ = [
    "ConnectionLimitLines",
    "JsonFormatter",
    "TextFormatter",
    "Throttle",
    "configure_logging",
    "one_line",
]

_WITHHELD = "[path not logged]"
_SERVING = " while serving "
# Attributes every LogRecord has; anything else was passed with `extra=` and is logged too.
_STANDARD = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)


class Throttle:
    """For a line a client can cause on every request: at once, then at most once per
    `interval` seconds. `due()` counts an occurrence and says whether to log it, with how many
    occurrences the line stands for (itself and those held back since the last one)."""

    def __init__(self, interval: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._next = -math.inf
        self._held = 0
        self.total = 0  # occurrences since the start

    def due(self) -> int | None:
        with self._lock:
            self.total += 1
            self._held += 1
            now = self._clock()
            if now < self._next:
                return None
            self._next = now + self._interval
            held, self._held = self._held, 0
            return held


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _WithoutRequestText(logging.Filter):
    """Cuts the raw path from waitress's "Client disconnected while serving /path" lines.

    waitress formats the path into the message itself; a client may put anything in a path,
    so it is never written out. Records of every other logger pass unchanged.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "waitress" or record.name.startswith("waitress."):
            message = record.getMessage()
            head, found, _path = message.partition(_SERVING)
            if found:
                record.msg, record.args = head + _SERVING + _WITHHELD, None
        return True


def one_line(text: str) -> str:
    """`text` with every line break (all that str.splitlines breaks at, \\u2028 included)
    and the backslash written as escapes: one event, one line. The CLI's error lines and
    the text log format both write through it."""
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(
        ch if ch.isprintable() and ch != "\\" else ch.encode("unicode_escape").decode("ascii")
        for ch in text
    )


_AT_THE_LIMIT = "total open connections "  # reached / dropped below the connection limit


class ConnectionLimitLines(logging.Filter):
    """waitress's "total open connections reached the connection limit" (and "dropped below
    ... listening again"): at once, then at most once a minute, the count appended.

    A client that holds the connections up to the limit and cycles one of them made waitress
    log the pair once per cycle, at warning and info.
    """

    def __init__(self, interval: float = 60.0) -> None:
        super().__init__()
        self._throttles = {"reached": Throttle(interval), "dropped": Throttle(interval)}

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.startswith(_AT_THE_LIMIT):
            return True
        kind = "reached" if "reached" in message else "dropped"
        times = self._throttles[kind].due()
        if times is None:
            return False
        record.msg, record.args = f"{message} ({times} time(s) since the last such line)", None
        return True


class TextFormatter(logging.Formatter):
    """`2026-01-01T00:00:00.000Z INFO sidecar.server: message key=value`, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{k}={v}" for k, v in vars(record).items() if k not in _STANDARD)
        line = f"{_timestamp(record)} {record.levelname} {record.name}: {record.getMessage()}"
        if extras:
            line += " " + extras
        if record.exc_info:
            line += " | " + self.formatException(record.exc_info)
        # Keep the event on one line: a message (a Python warning quotes its source line), an
        # extra or the traceback may hold line breaks; they are written escaped.
        return one_line(line)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, any extras, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update((k, v) for k, v in vars(record).items() if k not in _STANDARD)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(
    level: str = "info",
    fmt: str = "text",
    *,
    stream: TextIO | None = None,
) -> None:
    """Send every logger's records at `level` and above to `stream` (stderr) in `fmt`."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_WithoutRequestText())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.captureWarnings(True)  # a Python warning becomes one log line too
