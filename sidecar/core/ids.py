"""Session ids: random UUID4 strings, from os.urandom drawn many ids at a time.

`str(uuid.uuid4())` makes one `os.urandom(16)` call per id, and CPython releases the GIL
around that system call. On a busy threaded server the thread then waits for the GIL to come
back, up to the interpreter's switch interval (5 ms), on every create. Here one call serves
`batch` ids. Each thread draws from its own pool, so no thread ever waits on another's system
call; the bytes are the same kernel randomness, and each id gets the version and variant bits
of RFC 9562's version 4.
"""

from __future__ import annotations

import os
import threading

__all__ = ["SessionIds", "new_session_id"]

_BATCH = 256
# The variant digit: the top two bits of byte 8 become 10, so the hex digit is 8, 9, a or b.
_VARIANT = {f"{n:x}": f"{8 | (n & 3):x}" for n in range(16)}


class SessionIds:
    """A thread-safe source of UUID4 strings; the pools are dropped in a forked child."""

    def __init__(self, batch: int = _BATCH) -> None:
        if batch < 1:
            raise ValueError("batch must be at least 1")
        self._size = 16 * batch
        self._local = threading.local()
        # A child would otherwise hand out the same ids as its parent (no fork, no hook: Windows).
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._drop)

    def _drop(self) -> None:
        self._local = threading.local()

    def __call__(self) -> str:
        local = self._local
        pool: bytes = getattr(local, "pool", b"")
        at: int = getattr(local, "at", 0)
        if at >= len(pool):
            local.pool = pool = os.urandom(self._size)
            at = 0
        local.at = at + 16
        h = pool[at : at + 16].hex()
        # xxxxxxxx-xxxx-4xxx-Vxxx-xxxxxxxxxxxx: version nibble 4, variant digit V in 8-b
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


new_session_id = SessionIds()
