"""The README's curl walk-through, replayed against the app: each step does what it says."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

from flask.testing import FlaskClient

README = Path(__file__).resolve().parents[1] / "README.md"
S = "/api/v1/sessions"


def walkthrough() -> list[tuple[str, str, Any]]:
    """(method, path, JSON body or None) of each curl in the README's session walk-through."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## A session's life over HTTP", 1)[1]
    block = section.split("```sh", 1)[1].split("```", 1)[0]
    lines = [line for line in block.splitlines() if not line.lstrip().startswith("#")]
    # a curl command runs on until its quotes close
    commands: list[str] = []
    for line in lines:
        if commands and commands[-1].count("'") % 2:
            commands[-1] += "\n" + line
        elif line.startswith("curl "):
            commands.append(line)
    steps = []
    for command in commands:
        words = shlex.split(command, comments=True)
        method = words[words.index("-X") + 1] if "-X" in words else None
        body = json.loads(words[words.index("-d") + 1]) if "-d" in words else None
        path = next(w for w in words if w.startswith("$S"))
        steps.append((method or ("POST" if body is not None else "GET"), path, body))
    return steps


def test_the_walkthrough_has_the_steps_it_shows() -> None:
    assert [(method, path) for method, path, _ in walkthrough()] == [
        ("POST", "$S"),
        ("PUT", "$S/$ID/status"),
        ("PUT", "$S/$ID/progress"),
        ("PUT", "$S/$ID/scenes/1"),
        ("PATCH", "$S/$ID"),
        ("PUT", "$S/$ID/status"),
        ("GET", "$S?status=completed&limit=10"),
        ("PUT", "$S/$ID/status"),
    ]


def test_the_walkthrough_does_what_it_says(client: FlaskClient) -> None:
    answers = []
    session_id = ""
    for method, path, body in walkthrough():
        url = re.sub(r"\$ID", session_id, path.replace("$S", S))
        response = client.open(url, method=method, json=body)
        answers.append(response)
        if not session_id:
            session_id = response.get_json()["session_id"]

    created, processing, progress, scene, patched, completed, listed, refused = answers
    assert created.status_code == 201
    assert processing.get_json()["status"] == "processing"
    assert progress.get_json()["progress"]["percentage"] == 50.0
    assert scene.status_code == 201
    # "every scene at once": scene 1 keeps the title the step before gave it
    assert [s["title"] for s in patched.get_json()["scenes"]] == ["Discovery", None]
    assert completed.get_json()["status"] == "completed"
    assert completed.get_json()["progress"]["percentage"] == 100.0
    assert [item["session_id"] for item in listed.get_json()["items"]] == [session_id]
    assert listed.get_json()["next_cursor"] is None
    assert refused.status_code == 409
    assert refused.get_json()["detail"] == (
        "session is completed; processing is not allowed from there"
    )
