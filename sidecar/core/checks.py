"""Checks of what a caller asks for, done before any store call: values, fields, scenes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError

from sidecar.core.config import ManagerConfig
from sidecar.core.errors import SessionValidationError
from sidecar.core.models import (
    REQUEST,
    SCENE,
    STATUS,
    ErrorMessage,
    GenerationRequest,
    GenerationStatus,
    ProgressUpdate,
    ScenePrompt,
)
from sidecar.core.rules import UPDATABLE_FIELDS

__all__ = [
    "check",
    "check_request",
    "check_scene",
    "check_scenes_fit",
    "check_status",
    "check_updates",
    "new_config",
]

T = TypeVar("T")

_progress_adapter = TypeAdapter(ProgressUpdate | None)
_scenes_adapter = TypeAdapter(tuple[ScenePrompt, ...])
_error_message_adapter: TypeAdapter[str | None] = TypeAdapter(ErrorMessage | None)


def validation_error(exc: ValidationError, *loc: str) -> SessionValidationError:
    """pydantic's error as the core's own, each location prefixed with `loc`."""
    return SessionValidationError(
        [
            {"loc": [*loc, *err["loc"]], "msg": err["msg"], "type": err["type"]}
            for err in exc.errors(include_url=False)
        ]
    )


def check(adapter: TypeAdapter[T], value: Any, loc: str) -> T:
    try:
        return adapter.validate_python(value)
    except ValidationError as exc:
        raise validation_error(exc, loc) from None


def check_status(value: Any) -> GenerationStatus:
    return check(STATUS, value, "status")


def check_request(value: Any) -> GenerationRequest:
    if isinstance(value, GenerationRequest):
        return value
    return check(REQUEST, value, "request")


def check_scene(value: Any) -> ScenePrompt:
    if isinstance(value, ScenePrompt):
        return value
    return check(SCENE, value, "scene")


def new_config(values: Mapping[str, Any], base: ManagerConfig | None = None) -> ManagerConfig:
    """A validated ManagerConfig (seed name `cleanup_interval` accepted); SessionValidationError."""
    values = dict(values)
    if "cleanup_interval" in values:
        values["cleanup_interval_seconds"] = values.pop("cleanup_interval")
    try:
        return ManagerConfig(**values) if base is None else base.replace(**values)
    except ValidationError as exc:
        raise validation_error(exc) from None


def check_updates(updates: Mapping[str, Any]) -> dict[str, Any]:
    """Every update checked on its own (no session needed): unknown fields, types and values."""
    if not UPDATABLE_FIELDS.issuperset(updates):
        unknown = sorted(set(updates) - UPDATABLE_FIELDS)
        raise SessionValidationError(
            [{"loc": [k], "msg": "field cannot be updated", "type": "forbidden"} for k in unknown]
        )
    checked: dict[str, Any] = {}
    if "status" in updates:
        checked["status"] = check_status(updates["status"])
    if "error_message" in updates:
        checked["error_message"] = check(
            _error_message_adapter, updates["error_message"], "error_message"
        )
    if "progress" in updates:
        checked["progress"] = check(_progress_adapter, updates["progress"], "progress")
    if "scenes" in updates:
        checked["scenes"] = check(_scenes_adapter, updates["scenes"], "scenes")
    return checked


def check_scenes_fit(scenes: Sequence[ScenePrompt], num_scenes: int) -> tuple[ScenePrompt, ...]:
    """Scenes numbered 1 to `num_scenes`, each number once; ordered by number."""
    errors: list[dict[str, Any]] = []
    seen: set[int] = set()
    for i, scene in enumerate(scenes):
        if scene.scene_number > num_scenes:
            errors.append(_out_of_range(["scenes", i, "scene_number"], num_scenes))
        if scene.scene_number in seen:
            errors.append(
                {
                    "loc": ["scenes", i, "scene_number"],
                    "msg": "duplicate scene_number",
                    "type": "duplicate",
                }
            )
        seen.add(scene.scene_number)
    if errors:
        raise SessionValidationError(errors)
    return tuple(sorted(scenes, key=lambda s: s.scene_number))


def check_scene_fits(scene: ScenePrompt, num_scenes: int) -> None:
    if scene.scene_number > num_scenes:
        raise SessionValidationError([_out_of_range(["scene_number"], num_scenes)])


def _out_of_range(loc: list[Any], num_scenes: int) -> dict[str, Any]:
    return {
        "loc": loc,
        "msg": f"must be between 1 and num_scenes ({num_scenes})",
        "type": "out_of_range",
    }
