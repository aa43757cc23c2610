"""What a test does when an external tool it needs is missing: under CI (CI=true), where
.ci/run installs everything the tests use, it fails; elsewhere it skips, saying what to install."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def missing(message: str) -> NoReturn:
    """Fail under CI, skip elsewhere, with `message` (what is missing and how to get it)."""
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(message)
    pytest.skip(message)
