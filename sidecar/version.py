"""The sidecar's version, read from the installed package's metadata (pyproject.toml's)."""

from __future__ import annotations

from importlib.metadata import version

__all__ = ["DISTRIBUTION", "__version__"]

DISTRIBUTION = "session-sidecar"
__version__ = version(DISTRIBUTION)
