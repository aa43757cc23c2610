"""RemoteSessionManager against a real `sidecar serve`: the seed's calls and conventions.

The seed-style script at the end runs once on the in-process SessionManager and once on the
RemoteSessionManager, and both give the same sessions, figures and counts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from conftest import C, F, P, R, SidecarProcess, SidecarSpawner, poll, started

from sidecar.client import (
    NO_RETRY,
    NotRemotableError,
    RemoteSessionManager,
    RemoteSessionNotFoundError,
    RemoteValidationError,
    SidecarClient,
)
from sidecar.core.config import ManagerConfig
from sidecar.core.errors import InvalidTransitionError, SessionValidationError
from sidecar.core.manager import SessionManager
from sidecar.core.models import GenerationRequest, GenerationSession, MediaType, ScenePrompt

pytestmark = pytest.mark.process

REQUEST = GenerationRequest(story_text="A fox finds a lantern in the snow.", num_scenes=3)
MISSING = "no-such-session"


@pytest.fixture(scope="module")
def server(spawn_sidecar: SidecarSpawner) -> SidecarProcess:
    # the shortest stuck threshold, so a session can be recovered within a test
    return spawn_sidecar(max_sessions=50, stuck_after_seconds=1)


@pytest.fixture
def remote(server: SidecarProcess) -> Iterator[RemoteSessionManager]:
    with RemoteSessionManager(server.url, retry=NO_RETRY, page_size=2) as manager:
        manager.force_cleanup_all()
        manager.reconfigure(max_sessions=50)
        yield manager


def seed_answers_to_an_unknown(remote: RemoteSessionManager, sid: str) -> None:
    scene = ScenePrompt(scene_number=1, prompt="p")
    assert remote.get_session(sid) is None
    assert remote.update_session_status(sid, R) is False
    assert remote.update_session_progress(sid, 1, 2, "half") is False
    assert remote.add_scene_to_session(sid, scene) is False
    assert remote.set_session_scenes(sid, [scene]) is False
    assert remote.atomic_session_update(sid, {"status": "processing"}) is False
    assert remote.recover_corrupted_session(sid) is False
    assert remote.remove_session(sid) is False


# '.' and '..' would be path steps to httpx, '' the listing's path.
@pytest.mark.parametrize("sid", [MISSING, ".", "..", "", "a.b", "%2E"])
def test_unknown_ids_answer_as_the_seed_did(remote: RemoteSessionManager, sid: str) -> None:
    remote.create_session(REQUEST)  # one session, so a listing would not look like a 404
    seed_answers_to_an_unknown(remote, sid)
    with SessionManager() as local:  # the in-process manager knows no such session either
        assert local.get_session(sid) is None
        assert local.remove_session(sid) is False
    assert remote.get_session_count() == 1


@pytest.mark.parametrize("sid", [".", ".."])
def test_dot_ids_reach_the_server_as_ids(remote: RemoteSessionManager, sid: str) -> None:
    with pytest.raises(RemoteSessionNotFoundError) as caught:
        remote.client.put_status(sid, R)
    assert (caught.value.status, caught.value.slug) == (404, "session-not-found")
    assert caught.value.problem["detail"] == f"no session {sid}"  # the server's, naming it


def test_the_empty_id_is_not_found_without_a_request() -> None:
    def no_request(request: httpx.Request) -> httpx.Response:
        pytest.fail(f"sent {request.method} {request.url}")

    transport = httpx.MockTransport(no_request)
    with RemoteSessionManager(
        client=SidecarClient("http://sidecar.test", transport=transport)
    ) as m:
        seed_answers_to_an_unknown(m, "")
        with pytest.raises(RemoteSessionNotFoundError) as caught:
            m.client.get_session("")
    assert (caught.value.status, caught.value.slug, caught.value.session_id) == (
        404,
        "session-not-found",
        "",
    )


def test_changes_return_true_and_land(remote: RemoteSessionManager) -> None:
    sid = remote.create_session(REQUEST)
    assert isinstance(sid, str)
    assert remote.update_session_status(sid, R) is True
    assert remote.update_session_progress(sid, 1, 2, "half") is True
    assert remote.add_scene_to_session(sid, {"scene_number": 2, "prompt": "two"}) is True
    assert remote.set_session_scenes(sid, [ScenePrompt(scene_number=1, prompt="one")]) is True
    assert remote.atomic_session_update(sid, {"status": "completed"}) is True
    session = remote.get_session(sid)
    assert session is not None
    assert (session.status, [s.scene_number for s in session.scenes]) == (C, [1])
    assert session.progress is not None
    assert session.progress.description == "half"
    with pytest.raises(InvalidTransitionError) as refused:  # finished: nothing to recover
        remote.recover_corrupted_session(sid)
    assert refused.value.requested == "recover"
    assert remote.remove_session(sid) is True
    assert remote.get_session_count() == 0


def test_refused_changes_raise_the_cores_exceptions(remote: RemoteSessionManager) -> None:
    sid = remote.create_session(REQUEST)
    with pytest.raises(InvalidTransitionError):
        remote.update_session_status(sid, C)
    with pytest.raises(SessionValidationError):
        remote.update_session_progress(sid, 3, 2)


@pytest.mark.parametrize(
    "scene",
    [
        {"prompt": "p"},
        {"scene_number": None, "prompt": "p"},
        {"scene_number": "1", "prompt": "p"},
        {"scene_number": 1.0, "prompt": "p"},
        {"scene_number": True, "prompt": "p"},
        {"scene_number": "1/../../other/scenes/1", "prompt": "p"},  # a path, if it were sent
    ],
)
def test_a_scene_without_an_integer_number_is_the_cores_validation_error(
    remote: RemoteSessionManager, scene: dict[str, Any]
) -> None:
    sid = remote.create_session(REQUEST)
    with SessionManager() as local:
        local_sid = local.create_session(REQUEST).session_id
        with pytest.raises(SessionValidationError) as in_process:
            local.add_scene_to_session(local_sid, scene)
    for session_id in (sid, MISSING):  # the scene is checked before the session is looked up
        with pytest.raises(SessionValidationError) as caught:
            remote.add_scene_to_session(session_id, scene)
        assert isinstance(caught.value, RemoteValidationError)
        assert caught.value.status == 422
        assert [(e["loc"], e["msg"]) for e in caught.value.errors] == [
            (["body", "scene_number"], e["msg"]) for e in in_process.value.errors
        ]
    session = remote.get_session(sid)
    assert session is not None
    assert len(session.scenes) == 0  # nothing reached the session


def test_listings_walk_every_page(remote: RemoteSessionManager) -> None:
    ids = [remote.create_session(REQUEST) for _ in range(5)]  # page_size is 2: three pages
    for sid in ids[::2]:
        remote.update_session_status(sid, R)
    assert [i["session_id"] for i in remote.get_all_sessions_info()] == ids
    assert [s.session_id for s in remote.get_sessions_by_status(R)] == ids[::2]
    assert [s.session_id for s in remote.get_sessions_by_status("pending")] == ids[1::2]
    assert remote.get_session_count() == 5
    result = remote.bulk_update_status([*ids[1::2], MISSING], F)
    assert (result.updated, result.missing) == (2, [MISSING])


def test_cleanup_reconfigure_and_figures(remote: RemoteSessionManager) -> None:
    failed = remote.create_session(REQUEST)
    remote.update_session_status(failed, F)
    remote.create_session(REQUEST)
    assert remote.cleanup_completed_sessions(1.0) == 0
    assert remote.cleanup_failed_sessions(1.0) == 0  # hours, as the seed's argument
    assert remote.cleanup_failed_sessions() == 1  # every failed one, as the seed did
    assert remote.cleanup_expired_sessions(1.0) == 0
    assert remote.cleanup_expired_sessions(1e-9) == 1
    with pytest.raises(SessionValidationError):  # hours: 90,000 h is past the 10-year bound
        remote.cleanup_expired_sessions(90_000)
    config = remote.reconfigure(max_sessions=20, cleanup_interval=600)
    assert config == ManagerConfig(
        max_sessions=20, cleanup_interval_seconds=600.0, stuck_after_seconds=1
    )
    remote.create_session(REQUEST)
    assert remote.get_performance_stats()["utilization_percent"] == 5.0
    assert remote.get_health_status()["overall_health"] == "healthy"
    assert remote.force_cleanup_all() == 1


@pytest.mark.parametrize(
    ("call", "instead"),
    [
        (lambda m: m.with_session_lock("s", lambda s: s), "atomic_session_update"),
        (lambda m: m.bulk_update_sessions(["s"], lambda s: None), "bulk_update_status"),
        (lambda m: m.register_session_callback("created", print), "metrics"),
    ],
)
def test_calls_that_need_the_manager_in_process_name_the_remote_way(
    remote: RemoteSessionManager, call: Callable[[RemoteSessionManager], Any], instead: str
) -> None:
    with pytest.raises(NotRemotableError, match=instead) as caught:
        call(remote)
    assert isinstance(caught.value, NotImplementedError)


def test_shutdown_closes_the_client_and_leaves_the_sidecar_running(server: SidecarProcess) -> None:
    manager = RemoteSessionManager(server.url)
    assert manager.shutdown() is True
    with pytest.raises(RuntimeError):  # httpx: the client has been closed
        manager.get_session_count()
    assert server.process.poll() is None


# ---------------------------------------------------------------------- the seed's script


def recovered(manager: Any, session_id: str) -> bool | None:
    """True once `session_id` was recovered; None while it is not idle long enough."""
    try:
        return bool(manager.recover_corrupted_session(session_id))
    except InvalidTransitionError:
        return None


def seed_script(manager: Any, new_id: Callable[[Any], str]) -> dict[str, Any]:
    """A generation service's use of the seed's manager: create, progress, scenes, complete.

    `new_id` reads the id from what create_session returned (the seed's convention is the id;
    the in-process manager returns the session).
    """
    story = GenerationRequest(story_text="Two foxes and a lantern.", media_type=MediaType.ANIME)
    first = new_id(manager.create_session(story))
    second = new_id(manager.create_session(REQUEST))
    third = new_id(manager.create_session(REQUEST))
    assert manager.update_session_status(first, "processing")
    for step in range(1, 4):
        assert manager.update_session_progress(first, step, 3, f"scene {step}")
        assert manager.add_scene_to_session(
            first, ScenePrompt(scene_number=step, prompt=f"s{step}")
        )
    assert manager.set_session_scenes(
        first, [ScenePrompt(scene_number=n, prompt=f"final {n}") for n in (2, 1)]
    )
    assert manager.update_session_status(first, "completed")
    assert manager.update_session_status(second, "failed", "the model timed out")
    # third never moves: once idle past the stuck threshold (1 s) it can be recovered
    assert poll(lambda: recovered(manager, third), timeout=15, what="a recoverable session")
    ids = {first: "first", second: "second", third: "third"}

    def plain(session: GenerationSession | None) -> dict[str, Any]:
        assert session is not None
        return {
            "status": session.status,
            "request": session.request_data,
            "scenes": session.scenes,
            "progress": session.progress,
            "error": session.error_message,
        }

    def summary(info: dict[str, Any]) -> dict[str, Any]:
        kept = ("status", "scenes_stored", "scenes_requested", "progress")
        return {"id": ids[info["session_id"]], **{k: info[k] for k in kept}}

    results = {
        "sessions": {name: plain(manager.get_session(sid)) for sid, name in ids.items()},
        "count": manager.get_session_count(),
        "info": [summary(i) for i in manager.get_all_sessions_info()],
        "failed": [ids[s.session_id] for s in manager.get_sessions_by_status("failed")],
        "stats": manager.get_performance_stats(),
        "health": manager.get_health_status(),
        "removed": manager.remove_session(first),
        "removed_again": manager.remove_session(first),
        "cleaned_failed": manager.cleanup_failed_sessions(),
    }
    results["forced"] = manager.force_cleanup_all()
    return results


def test_the_seed_script_gives_the_same_results_in_process_and_remote(
    remote: RemoteSessionManager,
) -> None:
    with SessionManager(ManagerConfig(max_sessions=50, stuck_after_seconds=1)) as local:
        started(local)  # the served manager runs its cleanup worker too
        expected = seed_script(local, lambda session: session.session_id)
    got = seed_script(remote, lambda session_id: session_id)
    assert got == expected
    assert got["sessions"]["first"]["status"] is C
    assert got["info"][0]["progress"]["percentage"] == 100.0
    assert (got["failed"], got["removed"], got["removed_again"]) == (
        ["second", "third"],
        True,
        False,
    )
    assert got["sessions"]["third"]["status"] is F
    assert got["stats"]["status_breakdown"][P] == 0
    assert (got["cleaned_failed"], got["forced"]) == (2, 0)
