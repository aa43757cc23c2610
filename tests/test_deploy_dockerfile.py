"""deploy/Dockerfile, checked without building it (no container runtime runs here).

What can be checked: every file it copies from the build context exists and gets past its
.dockerignore, the base image is pinned to a Python release that satisfies requires-python,
it runs as a non-root user (the one the Deployment expects), and its entry point is the
project's console script with the `serve` command.
"""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = ROOT / "deploy" / "Dockerfile.dockerignore"
DEPLOYMENT = ROOT / "deploy" / "kubernetes" / "deployment.yaml"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    found = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def context_copies() -> list[str]:
    """Sources of every COPY from the build context (not from another stage)."""
    sources = []
    for word, args in instructions():
        if word == "COPY" and not args.startswith("--from"):
            sources += args.split()[:-1]
    return sources


def ignored(path: str) -> bool:
    """Whether the .dockerignore (last matching rule wins) keeps `path` out of the context."""
    result = False
    for rule in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        rule = rule.strip()
        if not rule or rule.startswith("#"):
            continue
        negate = rule.startswith("!")
        pattern = rule.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/"):
            result = not negate
    return result


def pyproject() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_every_copied_path_exists_and_is_in_the_build_context() -> None:
    sources = context_copies()
    assert sources == ["pyproject.toml", "README.md", "sidecar"]
    for source in sources:
        assert (ROOT / source).exists(), source
        assert not ignored(source), source
    assert (ROOT / "sidecar" / "py.typed").exists()
    assert ignored(".venv")
    assert ignored("tests")


def test_the_base_image_is_a_pinned_slim_python_that_satisfies_requires_python() -> None:
    bases = [args.split()[0] for word, args in instructions() if word == "FROM"]
    assert len(bases) == 2
    assert len(set(bases)) == 1
    found = re.fullmatch(r"python:(3)\.(\d+)\.(\d+)-slim-\w+", bases[0])
    assert found, bases[0]
    minimum = re.fullmatch(r">=3\.(\d+)", str(pyproject()["project"]["requires-python"]))
    assert minimum
    assert int(found.group(2)) >= int(minimum.group(1))


def test_it_runs_as_the_non_root_user_the_deployment_expects() -> None:
    users = [args for word, args in instructions() if word == "USER"]
    assert users == ["10001:10001"]
    pod = yaml.safe_load(DEPLOYMENT.read_text(encoding="utf-8"))["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["runAsGroup"] == 10001


def test_the_entry_point_is_the_console_script_serving() -> None:
    (entrypoint,) = [json.loads(args) for word, args in instructions() if word == "ENTRYPOINT"]
    scripts = pyproject()["project"]["scripts"]
    assert entrypoint[0] in scripts
    assert entrypoint[1:] == ["serve"]
    # The installed console script of that name knows the command.
    script = Path(sys.executable).with_name(entrypoint[0])
    result = subprocess.run(
        [str(script), "serve", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "--allow-unauthenticated" in result.stdout


def test_it_listens_on_every_interface_only_behind_the_sidecars_token_check() -> None:
    env = dict(
        args.split("=", 1)
        for word, args in instructions()
        if word == "ENV"
        for args in args.split()
    )
    assert env["SIDECAR_HOST"] == "0.0.0.0"
    assert "SIDECAR_API_TOKEN" not in env
    assert "SIDECAR_ALLOW_UNAUTHENTICATED" not in env


def test_the_extras_build_argument_installs_the_wheel_with_a_known_extra() -> None:
    # deploy/kubernetes-redis's image: --build-arg EXTRAS=redis. The RUN line's pip argument
    # is run by a real sh with each value; the default installs the bare wheel.
    assert ("ARG", 'EXTRAS=""') in instructions()
    (run,) = [args for word, args in instructions() if word == "RUN" and "EXTRAS" in args]
    found = re.search(r'pip install ("[^"]*")', run)
    assert found, run
    extras = pyproject()["project"]["optional-dependencies"]
    assert isinstance(extras, dict)
    assert "redis" in extras
    for value, expected in (("", "/wheels/x.whl"), ("redis", "/wheels/x.whl[redis]")):
        result = subprocess.run(
            ["sh", "-c", f"wheel=/wheels/x.whl; printf %s {found.group(1)}"],
            env={"PATH": "/usr/bin:/bin", "EXTRAS": value},
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        assert result.stdout == expected
