"""The route table: every route and method the sidecar serves, in one place.

The URL map, the metric series created at start-up, the token scopes and the OpenAPI document
are all built from `OPERATIONS`; the views (sidecar.web.views) are named by its endpoints.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sidecar.core.config import ManagerConfig
from sidecar.core.idempotency import KEYS_PER_SESSION, MAX_KEY_LENGTH
from sidecar.core.models import GenerationRequest, GenerationSession, ProgressUpdate, ScenePrompt
from sidecar.core.rules import RECOVER_RULE, RECOVERED_MESSAGE
from sidecar.web.auth import API_PREFIX
from sidecar.web.schemas import (
    BulkStatusRequest,
    BulkStatusResult,
    CleanupRequest,
    CleanupResult,
    ConfigPatch,
    HealthReport,
    Liveness,
    PerformanceStats,
    Readiness,
    ScenesReplace,
    SessionPage,
    SessionPatch,
    StatusChange,
)

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "OPERATIONS",
    "SCENE_CONVERTER",
    "SESSIONS",
    "Operation",
]

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
SESSIONS = API_PREFIX + "/sessions"
SESSION = SESSIONS + "/<session_id>"
# The converter of a scene number in a path: ASCII digits (sidecar.web.inputs.SceneNumber).
SCENE_CONVERTER = "scene"


@dataclass(frozen=True, slots=True)
class Operation:
    """One route and method: what it takes, what it answers, and which errors it can give."""

    method: str
    rule: str
    endpoint: str  # the Api method that serves it
    status: int  # its success status
    summary: str
    body: Any = None  # request body type (a pydantic model or dataclass)
    response: Any = None  # success body type; None: no content, str: text, dict: any object
    errors: tuple[int, ...] = ()
    tag: str = "sessions"
    also: tuple[int, ...] = ()  # other success statuses, with the same body
    headers: tuple[str, ...] = ()  # headers every success carries
    path_wins: tuple[str, ...] = ()  # body fields the path overrides (optional in the body)
    paged: bool = False  # takes ?status=, ?limit=, ?cursor= and ?stuck=
    idempotent: bool = False  # takes an Idempotency-Key header
    description: str = ""  # what the summary leaves out: rules, refusals
    # Whether the answer depends on a live setting (capacity, ages, thresholds). With a shared
    # store the gate reads the shared settings' version before such a request only: one Redis
    # round trip saved on each request that cannot tell (bench 9 priced it at 54 us of a
    # 682 us POST in the quiet run of 2026-12-03, 105 of 580 in a busy one).
    reads_settings: bool = True


_BODY_ERRORS = (400, 413, 415, 422)
_FINISHED = (
    "A finished session (completed or failed) never changes: a new status, error_message, "
    "progress or scenes answers 409 invalid-transition."
)
_SESSION_CHANGE = (404, *_BODY_ERRORS)
_IDEMPOTENT_CREATE = (
    "With an Idempotency-Key header (an RFC 8941 quoted string of 1 to "
    f"{MAX_KEY_LENGTH} characters, as the IETF httpapi Idempotency-Key draft writes it) at most "
    "one session is created per key: the same key with the same request answers as the first "
    "did (201, the same Location, the session as it is now); with another request it answers "
    "422 idempotency-key-reused, and once the key's session has been removed 409 "
    "idempotency-key-spent. A key is remembered for session_max_age_seconds from its create, "
    f"and at most {KEYS_PER_SESSION} x max_sessions keys (the oldest forgotten first); a "
    "create refused for capacity (429) does not use up its key."
)
_STUCK_LISTING = (
    "With stuck=true, only stuck sessions: processing and not updated for longer than "
    "stuck_after_seconds (as the sidecar_sessions_stuck gauge counts them), oldest last "
    "update first, paged with the cursor the same way; their ids can go to POST "
    "/api/v1/sessions/bulk/status."
)

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "POST", SESSIONS, "create_session", 201, "Create a session from a generation request",
        GenerationRequest, GenerationSession, (*_BODY_ERRORS, 409, 429), headers=("Location",),
        idempotent=True, description=_IDEMPOTENT_CREATE,
    ),
    Operation(
        "GET", SESSIONS, "list_sessions", 200, "List session summaries in creation order",
        response=SessionPage, errors=(422,), paged=True, description=_STUCK_LISTING,
    ),
    Operation(
        "POST", SESSIONS + "/bulk/status", "bulk_status", 200,
        "Set one status on many sessions", BulkStatusRequest, BulkStatusResult, _BODY_ERRORS,
        reads_settings=False,
    ),
    Operation(
        "GET", SESSION, "get_session", 200, "Read one session (touches last_accessed)",
        response=GenerationSession, errors=(404,),
        reads_settings=False,
    ),
    Operation(
        "DELETE", SESSION, "delete_session", 204, "Remove a session", errors=(404,),
        reads_settings=False,
    ),
    Operation(
        "PATCH", SESSION, "patch_session", 200,
        "Change status, error_message, progress and scenes together, or nothing",
        SessionPatch, GenerationSession, (*_SESSION_CHANGE, 409),
        description=f"{_FINISHED} scenes replaces the whole list.",
        reads_settings=False,
    ),
    Operation(
        "PUT", SESSION + "/status", "put_status", 200, "Move a session to another status",
        StatusChange, GenerationSession, (*_SESSION_CHANGE, 409),
        description=(
            f"{_FINISHED} The same status again changes nothing; with an error_message that "
            "differs from the stored one, it sets the message while the session is pending or "
            "processing and answers 409 once it is finished."
        ),
        reads_settings=False,
    ),
    Operation(
        "PUT", SESSION + "/progress", "put_progress", 200,
        "Record progress (pending or processing sessions only)",
        ProgressUpdate, GenerationSession, (*_SESSION_CHANGE, 409),
        reads_settings=False,
    ),
    Operation(
        "PUT", SESSION + f"/scenes/<{SCENE_CONVERTER}:n>", "put_scene", 201,
        "Add scene n (201) or replace it (200); the path's n wins over the body's",
        ScenePrompt, GenerationSession, (*_SESSION_CHANGE, 409), also=(200,),
        path_wins=("scene_number",),
        reads_settings=False,
    ),
    Operation(
        "PUT", SESSION + "/scenes", "put_scenes", 200, "Replace all scenes",
        ScenesReplace, GenerationSession, (*_SESSION_CHANGE, 409),
        reads_settings=False,
    ),
    Operation(
        "POST", SESSION + "/recover", "recover_session", 200,
        "Force a session whose work stopped into failed",
        response=GenerationSession, errors=(404, 409),
        description=(
            f"Sets status failed and error_message {RECOVERED_MESSAGE!r}. {RECOVER_RULE[0].upper()}"
            f"{RECOVER_RULE[1:]} (stuck_after_seconds: GET /api/v1/admin/config); any other "
            "session answers 409 invalid-transition with requested \"recover\"."
        ),
    ),
    Operation(
        "GET", API_PREFIX + "/stats", "stats", 200, "Performance statistics",
        response=PerformanceStats, tag="status",
    ),
    Operation(
        "GET", API_PREFIX + "/health", "health", 200, "Health by utilization",
        response=HealthReport, tag="status",
    ),
    Operation(
        "POST", API_PREFIX + "/admin/cleanup", "cleanup", 200, "Remove sessions now",
        CleanupRequest, CleanupResult, _BODY_ERRORS, tag="admin",
    ),
    Operation(
        "GET", API_PREFIX + "/admin/config", "get_config", 200, "The live manager settings",
        response=ManagerConfig, tag="admin",
    ),
    Operation(
        "PATCH", API_PREFIX + "/admin/config", "patch_config", 200,
        "Change live manager settings (validated, all or nothing)",
        ConfigPatch, ManagerConfig, _BODY_ERRORS, tag="admin",
    ),
    Operation(
        "GET", "/livez", "livez", 200, "The process is alive", response=Liveness, tag="ops",
    ),
    Operation(
        "GET", "/readyz", "readyz", 200,
        "Ready: not shutting down, cleanup worker alive", response=Readiness, errors=(503,),
        tag="ops",
    ),
    Operation(
        "GET", "/openapi.json", "openapi", 200, "This document", response=dict, tag="ops",
    ),
    Operation(
        "GET", "/metrics", "metrics", 200, "Prometheus metrics", response=str, tag="ops",
    ),
)  # fmt: skip
