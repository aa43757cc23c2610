"""The runbook's API calls name routes and methods the sidecar really serves."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from flask import Flask
from werkzeug.exceptions import MethodNotAllowed, NotFound

RUNBOOK = Path(__file__).resolve().parents[1] / "docs" / "runbook.md"
# a curl command in a code block line, or inline in backticks
_CURL = re.compile(r"^\s*(curl [^\n]*)$|`(curl [^`]*)`", re.MULTILINE)


def runbook_calls() -> list[tuple[str, str]]:
    """(method, path) of every curl call in the runbook, placeholders filled with examples."""
    calls = []
    text = RUNBOOK.read_text(encoding="utf-8").replace("\\\n", " ")
    for block, inline in _CURL.findall(text):
        command = (block or inline).split(" # ", 1)[0]
        words = shlex.split(command)
        method = words[words.index("-X") + 1] if "-X" in words else "GET"
        for url in (w for w in words if w.startswith("$SIDECAR")):
            path = url.removeprefix("$SIDECAR").split("?", 1)[0]
            calls.append((method, path.replace("<session_id>", "0f1e2d3c")))
    return calls


def test_the_runbook_has_api_calls() -> None:
    assert len(runbook_calls()) >= 10


@pytest.mark.parametrize(("method", "path"), runbook_calls())
def test_every_runbook_call_matches_a_route(app: Flask, method: str, path: str) -> None:
    adapter = app.url_map.bind("127.0.0.1")
    try:
        adapter.match(path, method=method)
    except (NotFound, MethodNotAllowed) as exc:
        pytest.fail(f"runbook: {method} {path} is not a route of the sidecar ({exc.code})")
