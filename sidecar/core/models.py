"""The session domain's data: validated, immutable pydantic dataclasses.

Pydantic dataclasses with slots keep the validation and JSON schema of pydantic v2 at about a
seventh of a BaseModel's memory per instance, which matters at 100,000 sessions with scenes each.
Every model is frozen: the manager replaces a stored session instead of changing it, so the
objects it hands out are safe to read without a copy.
"""

from __future__ import annotations

import dataclasses
import enum
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    ConfigDict,
    Field,
    Strict,
    computed_field,
    model_validator,
)
from pydantic.dataclasses import dataclass

__all__ = [
    "GenerationRequest",
    "GenerationSession",
    "GenerationStatus",
    "MediaType",
    "ProgressUpdate",
    "ScenePrompt",
    "FINISHED",
    "evolve",
    "trusted_session",
]

_EDGE = ConfigDict(extra="forbid", str_max_length=100_000)


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


NonBlank = AfterValidator(_not_blank)


class MediaType(enum.StrEnum):
    """The kind of pictures the scenes are written for."""

    CINEMATIC = "cinematic"
    ANIME = "anime"
    COMIC = "comic"
    STORYBOOK = "storybook"
    PHOTOREALISTIC = "photorealistic"
    WATERCOLOR = "watercolor"


class GenerationStatus(enum.StrEnum):
    """Where a generation session is in its life; the values become metric labels."""

    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"


FINISHED = frozenset({GenerationStatus.COMPLETED, GenerationStatus.FAILED})


@dataclass(frozen=True, slots=True, config=_EDGE)
class GenerationRequest:
    """What the generation service was asked to do."""

    story_text: Annotated[str, Field(min_length=1, max_length=100_000), NonBlank]
    media_type: MediaType = MediaType.CINEMATIC
    num_scenes: Annotated[int, Strict(), Field(ge=1, le=100)] = 5


@dataclass(frozen=True, slots=True, config=_EDGE)
class ProgressUpdate:
    """How far the generation has got."""

    current_step: Annotated[int, Strict(), Field(ge=0)]
    total_steps: Annotated[int, Strict(), Field(ge=1)]
    description: Annotated[str, Field(max_length=500)] = ""

    @model_validator(mode="after")
    def _step_within_total(self) -> ProgressUpdate:
        if self.current_step > self.total_steps:
            raise ValueError("current_step must not exceed total_steps")
        return self

    @computed_field  # type: ignore[prop-decorator]
    @property
    def percentage(self) -> float:
        """Share of the steps done, 0 to 100 with one decimal."""
        return round(self.current_step * 100 / self.total_steps, 1)


@dataclass(frozen=True, slots=True, config=_EDGE)
class ScenePrompt:
    """One generated scene; `scene_number` runs from 1 to its session's `num_scenes`."""

    scene_number: Annotated[int, Strict(), Field(ge=1, le=100)]
    prompt: Annotated[str, Field(min_length=1, max_length=10_000), NonBlank]
    title: Annotated[str, Field(max_length=200)] | None = None
    negative_prompt: Annotated[str, Field(max_length=10_000)] | None = None
    duration_seconds: Annotated[float, Field(gt=0, le=3600)] | None = None


def _in_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


def _ordered_scenes(scenes: tuple[ScenePrompt, ...]) -> tuple[ScenePrompt, ...]:
    numbers = [scene.scene_number for scene in scenes]
    if len(set(numbers)) != len(numbers):
        raise ValueError("scene numbers must be unique")
    return tuple(sorted(scenes, key=lambda scene: scene.scene_number))


# Aware timestamps only: a naive one would be read as local time by some and UTC by others.
UtcDatetime = Annotated[AwareDatetime, AfterValidator(_in_utc)]
OrderedScenes = Annotated[tuple[ScenePrompt, ...], AfterValidator(_ordered_scenes)]


@dataclass(frozen=True, slots=True, config=ConfigDict(extra="forbid"))
class GenerationSession:
    """One generation request and everything known about its progress."""

    session_id: str
    status: GenerationStatus
    request_data: GenerationRequest
    created_at: UtcDatetime
    last_accessed: UtcDatetime
    updated_at: UtcDatetime
    scenes: OrderedScenes = ()
    progress: ProgressUpdate | None = None
    error_message: str | None = None

    def age_seconds(self, now: datetime) -> float:
        """Seconds since the session was created."""
        return (now - self.created_at).total_seconds()

    def summary(self, now: datetime) -> dict[str, Any]:
        """The seed's per-session summary (get_all_sessions_info), in JSON types."""
        return {
            "session_id": self.session_id,
            "status": self.status.value,
            "created_at": _rfc3339(self.created_at),
            "last_accessed": _rfc3339(self.last_accessed),
            "updated_at": _rfc3339(self.updated_at),
            "age_hours": round(self.age_seconds(now) / 3600, 4),
            "num_scenes": len(self.scenes),
            "progress": None if self.progress is None else _progress_dict(self.progress),
        }


def _rfc3339(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _progress_dict(progress: ProgressUpdate) -> dict[str, Any]:
    return {
        "current_step": progress.current_step,
        "total_steps": progress.total_steps,
        "description": progress.description,
        "percentage": progress.percentage,
    }


# Built field by field through the slots' own setters: dataclasses.replace, or the class
# itself, would re-run pydantic validation over every scene on each update, and a loop over
# the fields costs about three times this straight line on the API's hottest path.
_SESSION_FIELDS = (
    "session_id",
    "status",
    "request_data",
    "created_at",
    "last_accessed",
    "updated_at",
    "scenes",
    "progress",
    "error_message",
)
if tuple(field.name for field in dataclasses.fields(GenerationSession)) != _SESSION_FIELDS:
    raise AssertionError("GenerationSession's fields changed: update trusted_session and evolve")
_slot = GenerationSession.__dict__
_set_id = _slot["session_id"].__set__
_set_status = _slot["status"].__set__
_set_request = _slot["request_data"].__set__
_set_created = _slot["created_at"].__set__
_set_accessed = _slot["last_accessed"].__set__
_set_updated = _slot["updated_at"].__set__
_set_scenes = _slot["scenes"].__set__
_set_progress = _slot["progress"].__set__
_set_error = _slot["error_message"].__set__
_new = object.__new__
_KEEP: Any = object()  # "unchanged" in evolve (None is a value some fields can take)


def trusted_session(
    *,
    session_id: str,
    status: GenerationStatus,
    request_data: GenerationRequest,
    created_at: datetime,
    last_accessed: datetime,
    updated_at: datetime,
    scenes: tuple[ScenePrompt, ...] = (),
    progress: ProgressUpdate | None = None,
    error_message: str | None = None,
) -> GenerationSession:
    """A session built from parts that are already valid, without validating them again."""
    session: GenerationSession = _new(GenerationSession)
    _set_id(session, session_id)
    _set_status(session, status)
    _set_request(session, request_data)
    _set_created(session, created_at)
    _set_accessed(session, last_accessed)
    _set_updated(session, updated_at)
    _set_scenes(session, scenes)
    _set_progress(session, progress)
    _set_error(session, error_message)
    return session


def evolve(
    session: GenerationSession,
    *,
    status: GenerationStatus = _KEEP,
    last_accessed: datetime = _KEEP,
    updated_at: datetime = _KEEP,
    scenes: tuple[ScenePrompt, ...] = _KEEP,
    progress: ProgressUpdate | None = _KEEP,
    error_message: str | None = _KEEP,
) -> GenerationSession:
    """A copy of `session` with the given fields changed, skipping validation (callers
    validate first). Identity and origin (session_id, request_data, created_at) never change."""
    clone: GenerationSession = _new(GenerationSession)
    _set_id(clone, session.session_id)
    _set_status(clone, session.status if status is _KEEP else status)
    _set_request(clone, session.request_data)
    _set_created(clone, session.created_at)
    _set_accessed(clone, session.last_accessed if last_accessed is _KEEP else last_accessed)
    _set_updated(clone, session.updated_at if updated_at is _KEEP else updated_at)
    _set_scenes(clone, session.scenes if scenes is _KEEP else scenes)
    _set_progress(clone, session.progress if progress is _KEEP else progress)
    _set_error(clone, session.error_message if error_message is _KEEP else error_message)
    return clone
