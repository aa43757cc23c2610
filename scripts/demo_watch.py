"""The demo's view of its Prometheus: where its pages are, and the alerts it reports."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any


def get_json(url: str, method: str = "GET", body: Any = None) -> Any:
    """The JSON answer of `url`; urllib's errors pass through."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)


def ui_prefix(prometheus: str) -> str:
    """Where this Prometheus serves its pages: `/classic` on Debian's 2.42 (no React UI), else ''.

    Its `/` redirects to its graph page, so ask it rather than guess.
    """

    class _NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *_: Any) -> None:
            return None

    opener = urllib.request.build_opener(_NoRedirect)
    try:
        opener.open(f"{prometheus}/", timeout=5).close()
    except urllib.error.HTTPError as exc:  # the redirect, not followed
        location = exc.headers.get("Location", "")
        if location.rstrip("/").endswith("/classic/graph"):
            return "/classic"
    return ""


class AlertWatch:
    """Prints each change of the alerts Prometheus reports, by name and where: the store for
    the alerts keyed by store (the session alerts), else the instance."""

    def __init__(self, prometheus: str, out: Callable[[str], None]) -> None:
        self._url = f"{prometheus}/api/v1/alerts"
        self._out = out
        self.states: dict[tuple[str, str], str] = {}
        self.seen: set[tuple[str, str]] = set()  # (alertname, state) ever seen

    def check(self) -> None:
        try:
            alerts = get_json(self._url)["data"]["alerts"]
        except (urllib.error.URLError, OSError, ValueError, KeyError):
            return
        now: dict[tuple[str, str], str] = {}
        for alert in alerts:
            labels = alert.get("labels", {})
            where = labels.get("store") or labels.get("instance", "")
            now[(labels.get("alertname", "?"), where)] = alert["state"]
        for key in sorted(self.states.keys() | now.keys()):
            before, after = self.states.get(key, "inactive"), now.get(key, "inactive")
            if before != after:
                name, place = key
                self.seen.add((name, after))
                where = f" ({place})" if place else ""
                self._out(f"alert {name}{where}: {before} -> {after}")
        self.states = now
