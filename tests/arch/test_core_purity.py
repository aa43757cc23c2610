"""The core stays pure: importing it loads no web framework, exporter, server or store client."""

from __future__ import annotations

import json
import subprocess
import sys

# What the core must never pull in, directly or through anything it imports.
FORBIDDEN = (
    "flask",
    "werkzeug",
    "waitress",
    "prometheus_client",
    "redis",
    "valkey",
    "httpx",
    "sidecar.web",
    "sidecar.metrics",
    "sidecar.server",
    "sidecar.settings",
)

_PROBE = """
import json, pkgutil, sys, importlib
import sidecar.core
for info in pkgutil.walk_packages(sidecar.core.__path__, "sidecar.core."):
    importlib.import_module(info.name)
print(json.dumps(sorted(sys.modules)))
"""


def loaded_by_core() -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    modules: list[str] = json.loads(out.stdout)
    return modules


def test_importing_the_core_loads_no_framework_exporter_or_client() -> None:
    modules = loaded_by_core()
    leaked = [m for m in modules if m.split(".")[0] in FORBIDDEN or m.startswith(FORBIDDEN)]
    assert leaked == []


def test_the_probe_sees_the_core_modules() -> None:
    # Guards the probe itself: an empty walk would pass the test above vacuously.
    modules = loaded_by_core()
    assert {"sidecar.core.models", "sidecar.core.manager", "pydantic"} <= set(modules)
