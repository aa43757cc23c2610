"""The session domain's data: validated, immutable dataclasses.

What a client sends (a request, progress, a scene) is a pydantic dataclass, validated when it is
built. The stored session is a stdlib dataclass validated at the edge: by `SESSION` (a pydantic
TypeAdapter, with the same rules and JSON schema) wherever a session comes from outside, such
as a snapshot file or a client's answer. The store builds sessions only from values already
checked, and building one is on the path of every create and every change: as a pydantic
dataclass it was validated again each time, 3.9 us per create and 6.6 us per change against
1.7 and 3.1 us now (timeit, 2026-12-03). Dataclasses with slots take about a seventh of a
BaseModel's memory per instance, which matters at 100,000 sessions with scenes each. Every
model is frozen: the manager replaces a stored session instead of changing it, so the objects
it hands out are safe to read without a copy.
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
    TypeAdapter,
    computed_field,
    model_validator,
    with_config,
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
    "MAX_ERROR_MESSAGE",
    "MAX_SCENES",
    "MAX_STEPS",
    "PROGRESS",
    "REQUEST",
    "SCENE",
    "SESSION",
    "STATUS",
    "ErrorMessage",
    "evolve",
]

_EDGE = ConfigDict(extra="forbid", str_max_length=100_000)
MAX_SCENES = 100  # scene numbers run from 1 to num_scenes, at most this
MAX_STEPS = 1_000_000  # total_steps (and so current_step) at most this
MAX_ERROR_MESSAGE = 2000  # characters
ErrorMessage = Annotated[str, Field(max_length=MAX_ERROR_MESSAGE)]


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
    num_scenes: Annotated[int, Strict(), Field(ge=1, le=MAX_SCENES)] = 5


@dataclass(frozen=True, slots=True, config=_EDGE)
class ProgressUpdate:
    """How far the generation has got."""

    current_step: Annotated[int, Strict(), Field(ge=0, le=MAX_STEPS)]
    total_steps: Annotated[int, Strict(), Field(ge=1, le=MAX_STEPS)]
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

    scene_number: Annotated[int, Strict(), Field(ge=1, le=MAX_SCENES)]
    prompt: Annotated[str, Field(min_length=1, max_length=10_000), NonBlank]
    title: Annotated[str, Field(max_length=200)] | None = None
    negative_prompt: Annotated[str, Field(max_length=10_000)] | None = None
    duration_seconds: Annotated[float, Strict(), Field(gt=0, le=3600)] | None = None


def _in_utc(moment: datetime) -> datetime:
    if moment.tzinfo is UTC:
        return moment
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+14:00 is before year 1 in UTC
        raise ValueError("out of range once converted to UTC") from None


def _ordered_scenes(scenes: tuple[ScenePrompt, ...]) -> tuple[ScenePrompt, ...]:
    if len(scenes) < 2:
        return scenes  # nothing to order or to repeat (checked on every session change)
    numbers = [scene.scene_number for scene in scenes]
    if len(set(numbers)) != len(numbers):
        raise ValueError("scene numbers must be unique")
    return tuple(sorted(scenes, key=lambda scene: scene.scene_number))


# Aware timestamps only: a naive one would be read as local time by some and UTC by others.
UtcDatetime = Annotated[AwareDatetime, AfterValidator(_in_utc)]
OrderedScenes = Annotated[tuple[ScenePrompt, ...], AfterValidator(_ordered_scenes)]


# Built as it is given (the docstring is the schema's description): validate a session from
# outside with SESSION.
@with_config(ConfigDict(extra="forbid"))
@dataclasses.dataclass(frozen=True, slots=True)
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
        """The per-session summary (list pages, get_all_sessions_info), in JSON types.

        The seed's `num_scenes` counted the scenes stored, while a request's `num_scenes` is
        the number asked for: the summary names both counts instead.
        """
        return {
            "session_id": self.session_id,
            "status": self.status.value,
            "created_at": _rfc3339(self.created_at),
            "last_accessed": _rfc3339(self.last_accessed),
            "updated_at": _rfc3339(self.updated_at),
            "age_hours": round(self.age_seconds(now) / 3600, 4),
            "scenes_stored": len(self.scenes),
            "scenes_requested": self.request_data.num_scenes,
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


# Validates a session from outside (a snapshot, a client's answer): the field types above
# (aware timestamps normalised to UTC, scenes ordered and unique), no unknown field.
SESSION: TypeAdapter[GenerationSession] = TypeAdapter(GenerationSession)
# One adapter per model every layer validates or dumps (the API, the stores, the client): built
# once here, as building one compiles its schema.
REQUEST: TypeAdapter[GenerationRequest] = TypeAdapter(GenerationRequest)
SCENE: TypeAdapter[ScenePrompt] = TypeAdapter(ScenePrompt)
PROGRESS: TypeAdapter[ProgressUpdate] = TypeAdapter(ProgressUpdate)
STATUS: TypeAdapter[GenerationStatus] = TypeAdapter(GenerationStatus)

# The fields a change may set; identity and origin (session_id, request_data, created_at) never
# change.
_CHANGEABLE = frozenset(
    {"status", "last_accessed", "updated_at", "scenes", "progress", "error_message"}
)


def evolve(session: GenerationSession, **changes: Any) -> GenerationSession:
    """A copy of `session` with the given fields changed, from values already checked (the
    store's timestamps, scenes that passed check_scenes_fit).

    The constructor called with every field, as dataclasses.replace would, without its walk
    over the fields' metadata: 1.9 us against 3.7 for a progress update (timeit,
    2026-12-03); every update of a memory-store session makes one. tests/test_models.py
    fails if a field is added to GenerationSession and not here.
    """
    if not _CHANGEABLE.issuperset(changes):
        refused = sorted(set(changes) - _CHANGEABLE)
        raise TypeError(f"evolve() cannot change: {', '.join(refused)}")
    get = changes.get
    return GenerationSession(
        session.session_id,
        get("status", session.status),
        session.request_data,
        session.created_at,
        get("last_accessed", session.last_accessed),
        get("updated_at", session.updated_at),
        get("scenes", session.scenes),
        get("progress", session.progress),
        get("error_message", session.error_message),
    )
