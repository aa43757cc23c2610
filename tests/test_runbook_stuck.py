"""The runbook's stuck-sessions commands, run as written (bash, curl, jq) against a real
`sidecar serve` whose threshold is one second: the listing names the stuck sessions, and the
bulk command fails exactly those (issue 13 item 7)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import httpx
import pytest
from conftest import SidecarSpawner, poll, require_binary

pytestmark = pytest.mark.process

RUNBOOK = Path(__file__).resolve().parents[1] / "docs" / "runbook.md"
STORY = {"story_text": "A fox finds a lantern in the snow."}


def stuck_section_commands() -> list[str]:
    """The shell blocks of the runbook's SidecarSessionsStuck section, in order."""
    text = RUNBOOK.read_text(encoding="utf-8")
    section = text.split("## SidecarSessionsStuck", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```sh\n(.*?)```", section, re.DOTALL)]


def test_the_runbook_lists_and_fails_the_stuck_sessions(spawn_sidecar: SidecarSpawner) -> None:
    require_binary("jq", "jq")
    require_binary("curl", "curl")
    listing, fail = stuck_section_commands()
    server = spawn_sidecar(stuck_after_seconds=1)
    with httpx.Client(base_url=server.url + "/api/v1/sessions", timeout=30) as http:
        ids = [http.post("", json=STORY).json()["session_id"] for _ in range(3)]
        for sid in ids[:2]:
            assert http.put(f"/{sid}/status", json={"status": "processing"}).status_code == 200

        def stuck() -> list[str] | None:
            found = [
                i["session_id"] for i in http.get("", params={"stuck": "true"}).json()["items"]
            ]
            return found if len(found) == 2 else None

        assert poll(stuck, timeout=15, what="two stuck sessions") == ids[:2]
        env = {**os.environ, "SIDECAR": server.url, "API": "Accept: application/json"}

        def run(command: str) -> str:
            done = subprocess.run(
                ["bash", "-c", f"set -o pipefail; {command}"],
                env=env, capture_output=True, text=True, timeout=30, check=True,
            )  # fmt: skip
            return done.stdout

        assert run(listing).split() == ids[:2]
        assert httpx.Response(200, content=run(fail)).json() == {
            "updated": 2,
            "missing": [],
            "conflicts": [],
        }
        statuses = [http.get(f"/{sid}").json()["status"] for sid in ids]
        assert statuses == ["failed", "failed", "pending"]
        assert http.get("", params={"stuck": "true"}).json()["items"] == []
