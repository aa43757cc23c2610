"""The API's request bodies and the shapes of its answers, as pydantic models.

Request bodies forbid unknown fields and take numbers strictly (no "5" for 5, no true for 1).
Fields a PATCH may leave out are read from `model_fields_set`, so an explicit null reaches the
core's own validation instead of being mistaken for "not given". The answer models document
the JSON the routes build; the OpenAPI document and its tests are made from them.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    ValidationInfo,
    create_model,
    field_validator,
)
from pydantic_core import PydanticCustomError

from sidecar.core.config import MANAGER_SETTINGS, Seconds
from sidecar.core.figures import Health
from sidecar.core.models import (
    MAX_SCENES,
    ErrorMessage,
    GenerationStatus,
    ProgressUpdate,
    ScenePrompt,
)

__all__ = [
    "MAX_ISSUES",
    "BulkStatusRequest",
    "BulkStatusResult",
    "CleanupRequest",
    "CleanupResult",
    "ConfigPatch",
    "HealthReport",
    "Liveness",
    "PerformanceStats",
    "ProblemDetails",
    "Readiness",
    "ReadinessChecks",
    "ScenesReplace",
    "SessionPage",
    "SessionPatch",
    "SessionSummary",
    "StatusChange",
    "ValidationIssue",
]

# A 422 lists at most this many issues and counts the rest in its detail, so that an answer
# stays small whatever the request: 60,000 unknown fields in a 649 KB body made a 5.4 MB one.
MAX_ISSUES = 50

MAX_BULK_IDS = 1000

_BODY = ConfigDict(extra="forbid")
SessionId = Annotated[str, Field(min_length=1, max_length=200)]


class StatusChange(BaseModel):
    """Body of PUT /sessions/{id}/status."""

    model_config = _BODY

    status: GenerationStatus
    error_message: ErrorMessage | None = None


class ScenesReplace(BaseModel):
    """Body of PUT /sessions/{id}/scenes: the complete new list (unique scene numbers)."""

    model_config = _BODY

    scenes: Annotated[list[ScenePrompt], Field(max_length=MAX_SCENES)]


def _document_not_null(schema: dict[str, Any], model: type[Any]) -> None:
    # The field is optional, not nullable: drop the null branch and default from its schema.
    properties: Any = schema.get("properties", {})
    for name, prop in properties.items():
        if name in getattr(model, "nullable", ()):
            continue
        branches = [b for b in prop.pop("anyOf", []) if b != {"type": "null"}]
        if len(branches) == 1:
            prop.update(branches[0])
        elif branches:
            prop["anyOf"] = branches
        prop.pop("default", None)


class _Partial(BaseModel):
    """A body whose fields may each be left out; null is taken only where it means "clear"."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_document_not_null)
    nullable: ClassVar[frozenset[str]] = frozenset()

    @field_validator("*")
    @classmethod
    def _null_only_where_meaningful(cls, value: Any, info: ValidationInfo) -> Any:
        # Runs for given values only (defaults are not validated), so None here was sent.
        if value is None and info.field_name not in cls.nullable:
            raise PydanticCustomError("not_null", "must not be null")
        return value

    def given(self) -> dict[str, Any]:
        """The fields the client sent, with their values."""
        return {name: getattr(self, name) for name in self.model_fields_set}


class SessionPatch(_Partial):
    """Body of PATCH /sessions/{id}: any of the four, applied together or not at all."""

    nullable = frozenset({"error_message", "progress"})

    status: GenerationStatus | None = None
    error_message: ErrorMessage | None = None
    progress: ProgressUpdate | None = None
    scenes: Annotated[list[ScenePrompt], Field(max_length=MAX_SCENES)] | None = None


class BulkStatusRequest(BaseModel):
    """Body of POST /sessions/bulk/status."""

    model_config = _BODY

    session_ids: Annotated[list[SessionId], Field(max_length=MAX_BULK_IDS)]
    status: GenerationStatus
    error_message: ErrorMessage | None = None


class CleanupRequest(BaseModel):
    """Body of POST /admin/cleanup; max_age_seconds does not apply to scope all."""

    model_config = _BODY

    scope: Literal["expired", "failed", "completed", "all"]
    max_age_seconds: Annotated[Seconds, Strict()] | None = None


def _config_fields() -> dict[str, Any]:
    # Each live setting as ManagerConfig declares it (type, bounds, help), optional, and with
    # numbers taken strictly like every other body ("5" is not 5).
    fields: dict[str, Any] = {}
    for spec in MANAGER_SETTINGS:
        if not spec.live:
            continue
        annotation: Any = spec.field.rebuild_annotation()
        if not spec.choices:
            annotation = Annotated[annotation, Strict()]
        fields[spec.name] = (annotation | None, Field(None, description=spec.help))
    return fields


ConfigPatch = create_model(
    "ConfigPatch",
    __base__=_Partial,
    __doc__="Body of PATCH /admin/config: any of the live manager settings, with their bounds.",
    __module__=__name__,
    **_config_fields(),
)


# ---------------------------------------------------------------------- answers


class _Answer(BaseModel):
    # Closed shapes: the API tests fail if a route adds a member the document lacks.
    model_config = ConfigDict(extra="forbid")


class SessionSummary(_Answer):
    """One session in a list: GenerationSession.summary()."""

    session_id: str
    status: GenerationStatus
    created_at: str = Field(json_schema_extra={"format": "date-time"})
    last_accessed: str = Field(json_schema_extra={"format": "date-time"})
    updated_at: str = Field(json_schema_extra={"format": "date-time"})
    age_hours: float
    scenes_stored: int = Field(description="How many scenes the session holds so far.")
    scenes_requested: int = Field(
        description="How many scenes were asked for: the request's num_scenes."
    )
    progress: ProgressUpdate | None


class SessionPage(_Answer):
    """A page of sessions in creation order; pass next_cursor back as ?cursor= for the next."""

    items: list[SessionSummary]
    next_cursor: str | None


class BulkStatusResult(_Answer):
    """What a bulk status change did."""

    updated: int
    missing: list[str]
    conflicts: list[str]


class CleanupResult(_Answer):
    """How many sessions a cleanup removed."""

    removed: int


class PerformanceStats(_Answer):
    """SessionManager.get_performance_stats()."""

    total_sessions: int
    max_capacity: int
    utilization_percent: float
    status_breakdown: dict[GenerationStatus, int]
    age_distribution: dict[str, int]
    average_age_hours: float
    oldest_session_hours: float
    newest_session_hours: float
    stuck_sessions: int


class HealthReport(_Answer):
    """SessionManager.get_health_status()."""

    overall_health: Health
    session_count: int
    utilization_percent: float
    stuck_sessions: int
    cleanup_active: bool


class Liveness(_Answer):
    """The process answers."""

    status: Literal["alive"]


class ReadinessChecks(_Answer):
    """Each condition readiness needs."""

    accepting: bool = Field(description="False once shutdown has begun.")
    manager_open: bool = Field(description="The session manager has not been shut down.")
    cleanup_worker_alive: bool = Field(description="The background cleanup thread runs.")
    store: bool = Field(
        True, description="The session store answers (always true for the memory store)."
    )


class Readiness(_Answer):
    """Ready to take traffic."""

    status: Literal["ready"]
    checks: ReadinessChecks


class ValidationIssue(_Answer):
    """One bad field: where (body, query or path, then the field path), why, and a type code."""

    loc: list[str | int]
    msg: str
    type: str


class ProblemDetails(BaseModel):
    """RFC 9457 problem details; the extension members appear only where they apply."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_document_not_null)

    type: str = Field(description="A URI naming the kind of problem (urn:sidecar:problem:...).")
    title: str
    status: int
    detail: str
    errors: list[ValidationIssue] | None = Field(
        None,
        max_length=MAX_ISSUES,
        description=(
            f"Each bad field, up to {MAX_ISSUES}; the detail counts them all "
            "(validation errors only)."
        ),
    )
    checks: ReadinessChecks | None = Field(None, description="Readiness conditions (/readyz).")
    current_status: str | None = Field(
        None, description="The session's status (invalid transitions only)."
    )
    requested: str | None = Field(
        None, description="The status or change asked for (invalid transitions only)."
    )
    session_id: str | None = Field(
        None, description="The session an Idempotency-Key created (idempotency-key-spent only)."
    )
