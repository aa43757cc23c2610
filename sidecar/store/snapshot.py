"""Snapshots of the memory store: a versioned JSON file, written atomically, read back validated.

The document is `{"format": "sidecar-snapshot", "version": 1, "written_at": ..., "sessions":
[...], "idempotency_keys": [...]}`. Sessions are the models' own pydantic serialization (without
the computed `percentage`); reading validates the whole document through the same models in
strict JSON mode, so a tampered file cannot bring in a bad status, a wrong type or an
unordered scene list. Every way a file can be wrong is a SnapshotError subclass; its reason is
meant for one line of output.

A write never leaves a half file under the snapshot's name: the document goes to a temporary
file in the same directory, which is flushed, fsynced, renamed over the snapshot (os.replace),
and the directory is fsynced so the rename itself survives a power cut.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import tempfile
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal, NamedTuple

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    TypeAdapter,
    ValidationError,
)

from sidecar.core.checks import check_scenes_fit
from sidecar.core.clock import from_micros, to_micros
from sidecar.core.errors import SessionValidationError
from sidecar.core.idempotency import MAX_KEY_LENGTH
from sidecar.core.models import MAX_ERROR_MESSAGE, SESSION, GenerationSession, UtcDatetime

__all__ = [
    "FORMAT",
    "VERSION",
    "KeyRecord",
    "Snapshot",
    "SnapshotContentError",
    "SnapshotCorruptError",
    "SnapshotError",
    "SnapshotFormatError",
    "SnapshotTruncatedError",
    "SnapshotUnreadableError",
    "SnapshotVersionError",
    "decode",
    "encode",
    "move_aside",
    "path_problem",
    "read_snapshot",
    "write_atomically",
]

FORMAT = "sidecar-snapshot"
VERSION = 1
_CHUNK = 1000  # sessions per written chunk


class KeyRecord(NamedTuple):
    """One remembered Idempotency-Key: when it was recorded (Unix microseconds), the
    fingerprint of its request and the session it created."""

    key: str
    recorded_us: int
    fingerprint: str
    session_id: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What a snapshot holds."""

    written_at: datetime
    sessions: list[GenerationSession]
    keys: list[KeyRecord]


class SnapshotError(Exception):
    """A snapshot file that cannot be used; `reason` says why in a few words."""

    def __init__(self, reason: str, path: Path | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path = path

    def __str__(self) -> str:
        return self.reason if self.path is None else f"{self.path}: {self.reason}"


class SnapshotUnreadableError(SnapshotError):
    """The file exists but cannot be read (permissions, a directory, an I/O error)."""


class SnapshotTruncatedError(SnapshotError):
    """The file is empty or its JSON ends before the document does."""


class SnapshotCorruptError(SnapshotError):
    """The file is not UTF-8 JSON."""


class SnapshotFormatError(SnapshotError):
    """JSON, but not a sidecar snapshot."""


class SnapshotVersionError(SnapshotError):
    """A sidecar snapshot of another format version."""


class SnapshotContentError(SnapshotError):
    """A sidecar snapshot of this version whose content the models refuse."""


_Fingerprint = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class _Key(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    key: Annotated[str, Field(min_length=1, max_length=MAX_KEY_LENGTH)]
    recorded_at: UtcDatetime
    fingerprint: _Fingerprint
    session_id: str


class _Document(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["sidecar-snapshot"]
    version: Annotated[int, Strict(), Field(ge=1, le=1)]  # neither true nor 1.0
    written_at: UtcDatetime
    sessions: list[GenerationSession]
    idempotency_keys: list[_Key]


_document = TypeAdapter(_Document)
_time = TypeAdapter(AwareDatetime)


def encode(
    written_at: datetime, sessions: Sequence[GenerationSession], keys: Sequence[KeyRecord]
) -> Iterator[bytes]:
    """The snapshot document, in chunks (a large store is never one string in memory)."""
    head = f'{{"format":{json.dumps(FORMAT)},"version":{VERSION},"written_at":'
    yield head.encode() + _time.dump_json(written_at) + b',"sessions":['
    for start in range(0, len(sessions), _CHUNK):
        chunk = sessions[start : start + _CHUNK]
        parts = [SESSION.dump_json(s, exclude_computed_fields=True) for s in chunk]
        yield (b"," if start else b"") + b",".join(parts)
    yield b'],"idempotency_keys":['
    for start in range(0, len(keys), _CHUNK):
        records = [
            {
                "key": k.key,
                "recorded_at": from_micros(k.recorded_us).isoformat().replace("+00:00", "Z"),
                "fingerprint": k.fingerprint,
                "session_id": k.session_id,
            }
            for k in keys[start : start + _CHUNK]
        ]
        yield (b"," if start else b"") + b",".join(
            json.dumps(r, separators=(",", ":")).encode() for r in records
        )
    yield b"]}\n"


def _diagnose(raw: bytes, error: ValidationError) -> SnapshotError:
    """The specific reason a document failed validation."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return SnapshotCorruptError(f"not a JSON text (not UTF-8 at byte {exc.start})")
    if not text.strip():
        return SnapshotTruncatedError("empty file")
    try:
        document = json.loads(text)
    except RecursionError:
        return SnapshotCorruptError("JSON nested deeper than any snapshot is")
    except json.JSONDecodeError as exc:
        # The text ends inside a value, or inside a string that never closes.
        if exc.pos >= len(text.rstrip()) or exc.msg.startswith("Unterminated string"):
            return SnapshotTruncatedError(
                f"truncated: the JSON ends after {len(raw)} bytes, before the document does"
            )
        return SnapshotCorruptError(f"not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})")
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        return SnapshotFormatError(f'not a sidecar snapshot (no "format": "{FORMAT}")')
    version = document.get("version")
    if type(version) is not int or version != VERSION:  # true and 1.0 are not 1
        return SnapshotVersionError(
            f"format version {json.dumps(version)}; this sidecar reads version {VERSION}"
        )
    first = error.errors(include_url=False)[0]
    where = ".".join(str(part) for part in first["loc"]) or "the document"
    more = error.error_count() - 1
    also = f" (and {more} more)" if more else ""
    return SnapshotContentError(f"invalid {where}: {first['msg']}{also}")


def decode(raw: bytes) -> Snapshot:
    """The snapshot in `raw`, validated through the models; a SnapshotError subclass if not."""
    try:
        document = _document.validate_json(raw, strict=True)
    except ValidationError as exc:
        raise _diagnose(raw, exc) from None
    seen: set[str] = set()
    for session in document.sessions:
        if session.session_id in seen:
            raise SnapshotContentError(f"session {session.session_id} appears twice")
        seen.add(session.session_id)
        problem = _not_from_this_api(session)
        if problem is not None:
            raise SnapshotContentError(f"session {session.session_id[:64]!r}: {problem}")
    keys = [
        KeyRecord(k.key, to_micros(k.recorded_at), k.fingerprint, k.session_id)
        for k in document.idempotency_keys
    ]
    if len({k.key for k in keys}) != len(keys):
        raise SnapshotContentError("an Idempotency-Key appears twice")
    return Snapshot(document.written_at, document.sessions, keys)


def _not_from_this_api(session: GenerationSession) -> str | None:
    """Why the API could never have made `session` (the rules a change is held to, which the
    model alone does not check), or None."""
    try:
        canonical = str(uuid.UUID(session.session_id))
    except ValueError:
        canonical = None
    if canonical != session.session_id:
        return "its id is not a session id (a lower-case UUID)"
    try:
        check_scenes_fit(session.scenes, session.request_data.num_scenes)
    except SessionValidationError as exc:
        return str(exc)
    if session.error_message is not None and len(session.error_message) > MAX_ERROR_MESSAGE:
        return f"its error_message is over {MAX_ERROR_MESSAGE} characters"
    if session.updated_at < session.created_at or session.last_accessed < session.created_at:
        return "it was updated or read before it was created"
    return None


def read_snapshot(path: Path) -> Snapshot | None:
    """The snapshot at `path`, or None when there is no file; SnapshotError naming `path`."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SnapshotUnreadableError(f"cannot be read ({exc.strerror or exc})", path) from None
    try:
        return decode(raw)
    except SnapshotError as exc:
        exc.path = path
        raise


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, chunks: Iterable[bytes]) -> int:
    """Write `chunks` to `path` all or nothing; how many bytes.

    Temporary file in the same directory, write, flush, fsync, os.replace, fsync the
    directory. If anything fails (a chunk raises, the disk is full) the temporary file is
    removed and whatever was at `path` is left as it was.
    """
    directory = path.parent
    prefix, suffix = _temporary_name(path)
    fd, temporary = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=directory)
    written = 0
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
                written += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    _fsync_directory(directory)
    return written


def _temporary_name(path: Path) -> tuple[str, str]:
    """The prefix and suffix of write_atomically's temporary files for `path`."""
    return f".{path.name}.", ".tmp"


def remove_leftovers(path: Path) -> int:
    """Remove the temporary files a write to `path` cut short left (a process killed while it
    wrote); how many. Only at start-up: a write of this process would be one of them."""
    prefix, suffix = _temporary_name(path)
    removed = 0
    for leftover in path.parent.glob(f"{glob.escape(prefix)}*{suffix}"):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()
            removed += 1
    return removed


def move_aside(path: Path, now: datetime) -> Path:
    """Rename `path` to `<path>.invalid-<UTC time>` (never over another file); the new path."""
    stamp = now.strftime("%Y%m%dT%H%M%S.%fZ")
    for attempt in range(100):
        suffix = f".invalid-{stamp}" + (f"-{attempt}" if attempt else "")
        target = path.with_name(path.name + suffix)
        if not target.exists():
            os.rename(path, target)
            _fsync_directory(path.parent)
            return target
    raise FileExistsError(f"{path}: 100 files already moved aside at {stamp}")


def path_problem(path: Path) -> str | None:
    """Why no snapshot can be written at `path` (checked at start-up), or None.

    Its directory must exist and take a new file (tried: a probe file is made and removed);
    `path` must not be a directory.
    """
    path = path.resolve()  # a symlink: where the snapshot really goes
    directory = path.parent
    if not directory.exists():
        return f"directory {directory} does not exist"
    if not directory.is_dir():
        return f"{directory} is not a directory"
    if path.is_dir():
        return "is a directory; name a file"
    if path.exists() and not path.is_file():
        # A FIFO would block the start-up's read forever; a device is no snapshot either.
        return "is not a regular file"
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=directory)
    except OSError as exc:
        return f"cannot write in {directory} ({exc.strerror or exc})"
    os.close(fd)
    os.unlink(probe)
    return None
