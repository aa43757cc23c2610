"""A session as the fields of its Redis hash, and back.

Fields: st (status), c / u / a (created, updated, last accessed: integer microseconds), rq
(request JSON), sc (scenes JSON), pg (progress as [current, total, description], '' for none),
er (error message JSON, '' for none). The scripts read only st, c and u; the rest is opaque to
them, so Lua never re-encodes what Python wrote.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import TypeAdapter

from sidecar.core.clock import from_micros
from sidecar.core.models import (
    REQUEST,
    GenerationRequest,
    GenerationSession,
    GenerationStatus,
    OrderedScenes,
    ProgressUpdate,
    ScenePrompt,
)
from sidecar.store.errors import UnreadableSessionError

__all__ = [
    "decode_session",
    "encode_error",
    "encode_progress",
    "encode_request",
    "encode_scenes",
    "from_micros",
]

# The sessions' own rule for scenes (ordered by number, each number once): a hash edited by
# hand is read as SESSION would accept it, or refused.
_scenes = TypeAdapter(OrderedScenes)


def encode_request(request: GenerationRequest) -> bytes:
    return REQUEST.dump_json(request)


def encode_scenes(scenes: Sequence[ScenePrompt]) -> bytes:
    return _scenes.dump_json(tuple(scenes))


def encode_progress(progress: ProgressUpdate | None) -> bytes:
    if progress is None:
        return b""
    return json.dumps([progress.current_step, progress.total_steps, progress.description]).encode()


def encode_error(message: str | None) -> bytes:
    return b"" if message is None else json.dumps(message).encode()


def _progress(raw: bytes) -> ProgressUpdate | None:
    if not raw:
        return None
    current, total, description = json.loads(raw)
    return ProgressUpdate(current_step=current, total_steps=total, description=description)


def decode_session(session_id: str, flat: Sequence[Any] | Mapping[Any, Any]) -> GenerationSession:
    """The session stored under `session_id`, from HGETALL's reply (a dict or a flat list);
    UnreadableSessionError if a field is missing or does not decode."""
    try:
        pairs = (
            flat.items() if isinstance(flat, Mapping) else zip(flat[::2], flat[1::2], strict=True)
        )
        f: dict[bytes, bytes] = dict(pairs)
        return GenerationSession(
            session_id=session_id,
            status=GenerationStatus(f[b"st"].decode()),
            request_data=REQUEST.validate_json(f[b"rq"]),
            created_at=from_micros(int(f[b"c"])),
            last_accessed=from_micros(int(f[b"a"])),
            updated_at=from_micros(int(f[b"u"])),
            scenes=_scenes.validate_json(f[b"sc"]),
            progress=_progress(f[b"pg"]),
            error_message=json.loads(f[b"er"]) if f[b"er"] else None,
        )
    except KeyError as exc:
        raise UnreadableSessionError(session_id, f"field {exc} is missing") from exc
    except (ValueError, TypeError, AttributeError) as exc:  # pydantic's errors are ValueErrors
        # pydantic's text spans lines; the reason goes into one log line
        reason = " ".join(str(exc).split())
        raise UnreadableSessionError(session_id, f"{type(exc).__name__}: {reason}") from exc
