"""The session domain's models: validation at the edge, immutability, derived values."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from sidecar.core.models import (
    FINISHED,
    SESSION,
    GenerationRequest,
    GenerationSession,
    GenerationStatus,
    MediaType,
    ProgressUpdate,
    ScenePrompt,
    evolve,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
STORY = GenerationRequest(story_text="A heron learns to read.", num_scenes=4)


def session_at(
    moment: datetime = NOW, scenes: tuple[ScenePrompt, ...] = (), **overrides: Any
) -> GenerationSession:
    values: dict[str, Any] = {
        "session_id": "00000000-0000-4000-8000-000000000000",
        "status": GenerationStatus.PENDING,
        "request_data": STORY,
        "created_at": moment,
        "last_accessed": moment,
        "updated_at": moment,
        "scenes": scenes,
    }
    return SESSION.validate_python({**values, **overrides})  # the edge: validated


# ----------------------------------------------------------------------- enums


def test_generation_status_values_are_the_four_lower_case_states() -> None:
    assert [s.value for s in GenerationStatus] == ["pending", "processing", "completed", "failed"]
    assert GenerationStatus("processing") is GenerationStatus.PROCESSING
    assert frozenset({GenerationStatus.COMPLETED, GenerationStatus.FAILED}) == FINISHED


def test_media_type_has_cinematic_and_other_lower_case_kinds() -> None:
    values = [m.value for m in MediaType]
    assert MediaType.CINEMATIC.value == "cinematic"
    assert len(values) > 1
    assert all(v == v.lower() for v in values)
    assert MediaType("anime") is MediaType.ANIME


# ----------------------------------------------------------------------- GenerationRequest


def test_request_defaults_to_cinematic() -> None:
    request = GenerationRequest(story_text="x")
    assert request.media_type is MediaType.CINEMATIC
    assert 1 <= request.num_scenes <= 100


@pytest.mark.parametrize(
    ("story_text", "num_scenes", "media_type"),
    [
        ("x", 1, "cinematic"),
        ("x" * 100_000, 100, "anime"),
        ("  a story with margins  ", 50, MediaType.WATERCOLOR),
    ],
)
def test_request_accepts_bounds(story_text: str, num_scenes: int, media_type: str) -> None:
    request = GenerationRequest(story_text=story_text, num_scenes=num_scenes, media_type=media_type)  # type: ignore[arg-type]
    assert request.story_text == story_text
    assert request.num_scenes == num_scenes
    assert request.media_type is MediaType(media_type)


@pytest.mark.parametrize(
    "bad",
    [
        {"story_text": ""},
        {"story_text": "   "},
        {"story_text": "\n\t "},
        {"story_text": "x" * 100_001},
        {"story_text": None},
        {"story_text": 42},
        {"num_scenes": 0},
        {"num_scenes": 101},
        {"num_scenes": -1},
        {"num_scenes": "3"},
        {"num_scenes": 3.0},
        {"num_scenes": True},
        {"media_type": "vhs"},
        {"media_type": "CINEMATIC"},
        {"style": "noir"},
        {"session_id": "x"},
    ],
)
def test_request_rejects_bad_input(bad: dict[str, Any]) -> None:
    values: dict[str, Any] = {"story_text": "A story.", "num_scenes": 3, **bad}
    with pytest.raises(ValidationError) as info:
        GenerationRequest(**values)
    assert info.value.error_count() == 1
    assert info.value.errors()[0]["loc"][0] == next(iter(bad))


def test_request_requires_story_text() -> None:
    with pytest.raises(ValidationError, match="story_text"):
        GenerationRequest()  # type: ignore[call-arg]


def test_request_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        STORY.num_scenes = 9  # type: ignore[misc]


# ----------------------------------------------------------------------- ProgressUpdate


@pytest.mark.parametrize(
    ("current", "total", "percentage"),
    [
        (0, 1, 0.0),
        (1, 1, 100.0),
        (1, 3, 33.3),
        (2, 3, 66.7),
        (1, 6, 16.7),
        (1, 8, 12.5),
        (5, 10, 50.0),
        (999, 1000, 99.9),
        (9999, 10000, 100.0),
    ],
)
def test_progress_percentage_is_derived_with_one_decimal(
    current: int, total: int, percentage: float
) -> None:
    progress = ProgressUpdate(current_step=current, total_steps=total)
    assert progress.percentage == percentage
    assert TypeAdapter(ProgressUpdate).dump_python(progress)["percentage"] == percentage


@given(st.integers(1, 10**6).flatmap(lambda t: st.tuples(st.integers(0, t), st.just(t))))
@settings(max_examples=150, deadline=None)
def test_progress_percentage_stays_within_0_and_100(steps: tuple[int, int]) -> None:
    current, total = steps
    percentage = ProgressUpdate(current_step=current, total_steps=total).percentage
    assert 0.0 <= percentage <= 100.0
    assert round(percentage, 1) == percentage
    assert abs(percentage - current * 100 / total) <= 0.05 + 1e-9


def test_progress_description_defaults_empty_and_allows_500_chars() -> None:
    assert ProgressUpdate(current_step=0, total_steps=1).description == ""
    progress = ProgressUpdate(current_step=0, total_steps=1, description="d" * 500)
    assert len(progress.description) == 500


@pytest.mark.parametrize(
    ("bad", "loc"),
    [
        ({"current_step": -1}, "current_step"),
        ({"total_steps": 0}, "total_steps"),
        ({"total_steps": -3}, "total_steps"),
        ({"current_step": 6, "total_steps": 5}, None),
        ({"description": "d" * 501}, "description"),
        ({"current_step": 1.0}, "current_step"),
        ({"current_step": "1"}, "current_step"),
        ({"total_steps": True}, "total_steps"),
        ({"percentage": 50.0}, "percentage"),
        ({"eta_seconds": 3}, "eta_seconds"),
    ],
)
def test_progress_rejects_bad_input(bad: dict[str, Any], loc: str | None) -> None:
    values: dict[str, Any] = {"current_step": 1, "total_steps": 5, **bad}
    with pytest.raises(ValidationError) as info:
        ProgressUpdate(**values)
    error = info.value.errors()[0]
    assert (error["loc"][0] if error["loc"] else None) == loc


def test_progress_is_frozen() -> None:
    progress = ProgressUpdate(current_step=1, total_steps=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        progress.current_step = 2  # type: ignore[misc]


# ----------------------------------------------------------------------- ScenePrompt


def test_scene_needs_only_number_and_prompt() -> None:
    scene = ScenePrompt(scene_number=1, prompt="A heron on a post.")
    assert (scene.title, scene.negative_prompt, scene.duration_seconds) == (None, None, None)


def test_scene_keeps_optional_fields() -> None:
    scene = ScenePrompt(
        scene_number=100,
        prompt="p" * 10_000,
        title="t" * 200,
        negative_prompt="blurry",
        duration_seconds=3600,
    )
    assert scene.scene_number == 100
    assert scene.title == "t" * 200
    assert scene.negative_prompt == "blurry"
    assert scene.duration_seconds == 3600.0


@pytest.mark.parametrize(
    "bad",
    [
        {"scene_number": 0},
        {"scene_number": -1},
        {"scene_number": 101},
        {"scene_number": "1"},
        {"scene_number": 1.0},
        {"prompt": ""},
        {"prompt": "   "},
        {"prompt": "p" * 10_001},
        {"prompt": None},
        {"title": "t" * 201},
        {"duration_seconds": 0},
        {"duration_seconds": -2.5},
        {"duration_seconds": 3600.5},
        {"seed": 7},
    ],
)
def test_scene_rejects_bad_input(bad: dict[str, Any]) -> None:
    values: dict[str, Any] = {"scene_number": 1, "prompt": "A heron.", **bad}
    with pytest.raises(ValidationError) as info:
        ScenePrompt(**values)
    assert info.value.errors()[0]["loc"][0] == next(iter(bad))


@pytest.mark.parametrize("missing", ["scene_number", "prompt"])
def test_scene_requires_number_and_prompt(missing: str) -> None:
    values: dict[str, Any] = {"scene_number": 1, "prompt": "A heron."}
    del values[missing]
    with pytest.raises(ValidationError, match=missing):
        ScenePrompt(**values)


# ----------------------------------------------------------------------- GenerationSession


def test_session_is_frozen() -> None:
    session = session_at()
    with pytest.raises(dataclasses.FrozenInstanceError):
        session.status = GenerationStatus.FAILED  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        session.scenes = ()  # type: ignore[misc]
    assert isinstance(session.scenes, tuple)


def test_session_rejects_unknown_fields() -> None:
    with pytest.raises(ValidationError, match="owner"):
        session_at(owner="me")


@pytest.mark.parametrize("field", ["created_at", "last_accessed", "updated_at"])
def test_session_rejects_naive_timestamps(field: str) -> None:
    with pytest.raises(ValidationError) as info:
        session_at(**{field: datetime(2026, 3, 1, 12, 0)})
    assert info.value.errors()[0]["loc"] == (field,)


def test_session_timestamps_are_normalised_to_utc() -> None:
    plus_two = timezone(timedelta(hours=2))
    session = session_at(moment=datetime(2026, 3, 1, 14, 0, tzinfo=plus_two))
    for moment in (session.created_at, session.last_accessed, session.updated_at):
        assert moment == NOW
        assert moment.utcoffset() == timedelta(0)
        assert moment.tzinfo is UTC


def test_session_scenes_are_kept_ordered_by_number() -> None:
    scenes = tuple(ScenePrompt(scene_number=n, prompt=f"scene {n}") for n in (3, 1, 4, 2))
    session = session_at(scenes=scenes)
    assert [s.scene_number for s in session.scenes] == [1, 2, 3, 4]


def test_session_rejects_duplicate_scene_numbers() -> None:
    scenes = (ScenePrompt(scene_number=2, prompt="a"), ScenePrompt(scene_number=2, prompt="b"))
    with pytest.raises(ValidationError, match="scene"):
        session_at(scenes=scenes)


def test_session_age_is_seconds_since_creation() -> None:
    session = session_at()
    assert session.age_seconds(NOW) == 0.0
    assert session.age_seconds(NOW + timedelta(hours=2, microseconds=1)) == 7200.000001


def test_session_summary_has_the_seed_fields_in_json_types() -> None:
    progress = ProgressUpdate(current_step=1, total_steps=4, description="drafting")
    scenes = (ScenePrompt(scene_number=1, prompt="a"),)
    session = session_at(scenes=scenes, progress=progress)
    assert session.summary(NOW + timedelta(minutes=90)) == {
        "session_id": "00000000-0000-4000-8000-000000000000",
        "status": "pending",
        "created_at": "2026-03-01T12:00:00Z",
        "last_accessed": "2026-03-01T12:00:00Z",
        "updated_at": "2026-03-01T12:00:00Z",
        "age_hours": 1.5,
        "scenes_stored": 1,
        "scenes_requested": 4,
        "progress": {
            "current_step": 1,
            "total_steps": 4,
            "description": "drafting",
            "percentage": 25.0,
        },
    }
    assert session_at().summary(NOW)["progress"] is None


def test_evolve_returns_a_changed_copy_and_leaves_the_original() -> None:
    session = session_at()
    later = NOW + timedelta(seconds=5)
    changed = evolve(session, status=GenerationStatus.PROCESSING, updated_at=later)
    assert changed.status is GenerationStatus.PROCESSING
    assert changed.updated_at == later
    assert changed.created_at == session.created_at
    assert session.status is GenerationStatus.PENDING
    assert session.updated_at == NOW
    assert changed != session


def test_evolve_refuses_unknown_fields() -> None:
    with pytest.raises(TypeError, match="owner"):
        evolve(session_at(), owner="me")


@pytest.mark.parametrize("name", ["session_id", "request_data", "created_at"])
def test_evolve_never_changes_identity_or_origin(name: str) -> None:
    with pytest.raises(TypeError, match=name):
        evolve(session_at(), **{name: getattr(session_at(NOW + timedelta(1)), name)})


CHANGES: dict[str, Any] = {
    "status": GenerationStatus.PROCESSING,
    "last_accessed": NOW + timedelta(seconds=1),
    "updated_at": NOW + timedelta(seconds=2),
    "scenes": (ScenePrompt(scene_number=1, prompt="A heron."),),
    "progress": ProgressUpdate(current_step=1, total_steps=3),
    "error_message": "boom",
}


@pytest.mark.parametrize("name", sorted(CHANGES))
def test_evolve_changes_exactly_the_field_it_is_given(name: str) -> None:
    original = session_at(progress=ProgressUpdate(current_step=0, total_steps=3))

    changed = evolve(original, **{name: CHANGES[name]})

    expected = dataclasses.replace(original, **{name: CHANGES[name]})
    assert changed == expected
    assert dataclasses.asdict(changed) == dataclasses.asdict(expected)


def test_evolve_copies_every_field_of_the_session() -> None:
    # One value unlike the default for every field GenerationSession has: a field added to the
    # model and not to this table fails here (KeyError), one added to the table and not to
    # evolve() fails the comparison.
    unlike_default: dict[str, Any] = {
        "session_id": "0f6f1a52-4a4e-4c43-9d0b-7b5d8f0c2a11",
        "status": GenerationStatus.FAILED,
        "request_data": GenerationRequest(story_text="A heron waits.", num_scenes=2),
        "created_at": NOW - timedelta(seconds=30),
        "last_accessed": NOW - timedelta(seconds=20),
        "updated_at": NOW - timedelta(seconds=10),
        "scenes": (ScenePrompt(scene_number=2, prompt="A heron."),),
        "progress": ProgressUpdate(current_step=2, total_steps=3),
        "error_message": "boom",
    }
    names = [field.name for field in dataclasses.fields(GenerationSession)]
    original = GenerationSession(**{name: unlike_default[name] for name in names})

    copied = evolve(original)

    assert copied is not original
    for name in names:
        assert getattr(copied, name) is getattr(original, name), name
