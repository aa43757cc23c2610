"""What `make run` and `make test` install, and the project's metadata as setuptools builds it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from missing import missing

ROOT = Path(__file__).resolve().parents[1]
_PIP_INSTALL = re.compile(r"pip install --quiet -e (\S+)")


def installs(target: str, venv: Path) -> list[str]:
    """What `make -n target` would pip install -e into a fresh virtual environment at `venv`."""
    make = shutil.which("make")
    if make is None:
        missing("make is not installed; .ci/run installs it")
    dry_run = subprocess.run(
        [make, "-n", "-C", str(ROOT), target, f"VENV={venv}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return [spec.strip("'\"") for spec in _PIP_INSTALL.findall(dry_run.stdout)]


@pytest.mark.parametrize(
    ("target", "spec"),
    [("run", "."), ("demo", ".[demo]"), ("test", ".[dev]"), ("dashboards", ".[dev]")],
)
def test_each_target_installs_only_what_it_uses(tmp_path: Path, target: str, spec: str) -> None:
    assert installs(target, tmp_path / "venv") == [spec]


def test_metadata_builds_without_deprecation_banners(tmp_path: Path) -> None:
    # A copy, so the build's egg-info lands in tmp_path and not in the worktree.
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    shutil.copy(ROOT / "README.md", tmp_path)
    (tmp_path / "sidecar").mkdir()
    (tmp_path / "sidecar" / "__init__.py").touch()
    (tmp_path / "sidecar" / "py.typed").touch()
    build = (
        "import sys; from setuptools import build_meta; "
        "print(build_meta.prepare_metadata_for_build_wheel(sys.argv[1]))"
    )
    out = tmp_path / "out"
    out.mkdir()

    done = subprocess.run(
        [sys.executable, "-c", build, str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 0, done.stderr
    assert "deprecat" not in (done.stdout + done.stderr).lower(), done.stderr
    metadata = (out / done.stdout.split()[-1] / "METADATA").read_text(encoding="utf-8")
    assert "License-Expression: Apache-2.0" in metadata.splitlines()
