"""deploy/kubernetes-redis, validated offline: what `kubectl apply -k` would apply, no cluster.

The variant is the base plus patches, so the tests check what real kustomize renders:
`kubectl kustomize` (kubectl embeds kustomize; this machine image has kubectl from Google's
google-cloud-cli packages, Debian has none, and neither PyPI nor npm has a package running real
kustomize; under CI a missing kubectl fails, elsewhere it skips). Then:
- built-in kinds against the Kubernetes 1.29 OpenAPI schemas (kubernetes-validate, strict), the
  prometheus-operator kinds against the CRD schemas, as for the base;
- the Secret's store URL with the sidecar's own URL check, naming the Redis Service;
- the Redis ConfigMap's redis.conf and the Secret's password run a real redis-server (which
  refuses a broken redis.conf), and a real sidecar with the pod's settings becomes ready on it
  (and not without the password).
Each validator is also shown rejecting a broken manifest.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from conftest import SidecarSpawner
from missing import missing
from redis_server import RedisServer, require_redis_server
from test_deploy_kubernetes import CRDS, K8S_VERSION, crd_errors, k8s_errors

from sidecar.store.url import check_prefix, check_url, store_label

ROOT = Path(__file__).resolve().parents[1]
VARIANT = ROOT / "deploy" / "kubernetes-redis"
BASE = ROOT / "deploy" / "kubernetes"
BUILT_IN = {"ConfigMap", "Secret", "Deployment", "Service", "StatefulSet"}
Docs = list[dict[str, Any]]


def require_kubectl() -> str:
    """Path of kubectl; under CI a missing one fails instead of skipping."""
    path = shutil.which("kubectl")
    if path is None:
        message = (
            "kubectl is not installed (it embeds kustomize; no Debian package: Google's"
            " google-cloud-cli apt repository has one, as this machine image does)"
        )
        missing(message)
    return path


def kustomize(directory: Path) -> Docs:
    """What `kubectl apply -k directory` would apply, rendered by real kustomize."""
    kubectl = require_kubectl()
    result = subprocess.run(
        [kubectl, "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def rendered() -> Docs:
    return kustomize(VARIANT)


def one(docs: Docs, kind: str, name: str | None = None) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    return found


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def sidecar_of(docs: Docs) -> dict[str, Any]:
    (container,) = one(docs, "Deployment")["spec"]["template"]["spec"]["initContainers"]
    return container


def redis_container(docs: Docs) -> dict[str, Any]:
    (container,) = one(docs, "StatefulSet")["spec"]["template"]["spec"]["containers"]
    return container


def store_secret(docs: Docs) -> dict[str, str]:
    ref = env_of(sidecar_of(docs))["SIDECAR_STORE"]["valueFrom"]["secretKeyRef"]
    data: dict[str, str] = one(docs, "Secret", ref["name"])["stringData"]
    assert ref["key"] in data
    return data


# ---------------------------------------------------------------------------- what is there


def test_the_variant_is_the_base_plus_redis(rendered: Docs) -> None:
    names = {(d["kind"], d["metadata"]["name"]) for d in rendered}
    base = {(d["kind"], d["metadata"]["name"]) for d in kustomize(BASE)}
    assert names - base == {
        ("Secret", "session-sidecar-store"),
        ("ConfigMap", "session-sidecar-redis"),
        ("StatefulSet", "session-sidecar-redis"),
        ("Service", "session-sidecar-redis"),
    }
    assert base <= names
    assert {d["kind"] for d in rendered} == BUILT_IN | CRDS
    # the monitoring is the base's, unchanged
    for kind in ("ServiceMonitor", "PrometheusRule", "Service"):
        for doc in kustomize(BASE):
            if doc["kind"] == kind:
                assert one(rendered, kind, doc["metadata"]["name"]) == doc


def test_every_built_in_kind_matches_the_kubernetes_schemas(rendered: Docs) -> None:
    errors = {
        (d["kind"], d["metadata"]["name"]): k8s_errors(d) for d in rendered if d["kind"] in BUILT_IN
    }
    assert len(errors) == 9
    assert errors == dict.fromkeys(errors)


def test_the_kubernetes_schemas_reject_a_broken_statefulset_and_patch(rendered: Docs) -> None:
    statefulset = copy.deepcopy(one(rendered, "StatefulSet"))
    claim = statefulset["spec"]["volumeClaimTemplates"][0]["spec"]
    claim["accessMode"] = claim.pop("accessModes")
    assert "accessMode" in (k8s_errors(statefulset) or "")

    deployment = copy.deepcopy(one(rendered, "Deployment"))
    deployment["spec"]["replicas"] = "3"
    assert "'3' is not of type" in (k8s_errors(deployment) or ""), K8S_VERSION


def test_kustomize_refuses_a_patch_of_nothing(tmp_path: Path) -> None:
    # A patch whose target is misspelt is an error, not a silent no-op.
    copy_dir = tmp_path / "kubernetes-redis"
    copy_dir.mkdir()
    for path in VARIANT.iterdir():
        (copy_dir / path.name).write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "kubernetes").symlink_to(BASE)
    patch = copy_dir / "deployment-patch.yaml"
    patch.write_text(
        patch.read_text(encoding="utf-8").replace("name: story-generator", "name: story-gen"),
        encoding="utf-8",
    )
    result = subprocess.run(
        [require_kubectl(), "kustomize", str(copy_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "story-gen" in result.stderr


def test_the_operator_kinds_match_the_crd_schemas(rendered: Docs) -> None:
    documents = [d for d in rendered if d["kind"] in CRDS]
    assert len(documents) == 2
    assert crd_errors(*documents) == [None, None]


# ---------------------------------------------------------------------------- the replicas


def test_three_replicas_of_one_store_with_native_sidecars(rendered: Docs) -> None:
    deployment = one(rendered, "Deployment")
    assert deployment["spec"]["replicas"] == 3
    sidecar = sidecar_of(rendered)
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["readinessProbe"]["httpGet"]["path"] == "/readyz"  # checks the store
    assert sidecar["image"].endswith("-redis")  # built with EXTRAS=redis
    settings = one(rendered, "ConfigMap", "session-sidecar")["data"]
    assert {"configMapRef": {"name": "session-sidecar"}} in sidecar["envFrom"]
    assert check_prefix(settings["SIDECAR_STORE_PREFIX"])
    assert settings["SIDECAR_STORE_NAME"]  # one name for every pod: one `store` label
    assert "SIDECAR_STORE" not in settings  # a URL with a password: from the Secret only


def test_the_store_url_parses_and_names_the_redis_service(rendered: Docs) -> None:
    secret = store_secret(rendered)
    url = check_url(secret["SIDECAR_STORE"])
    parts = urllib.parse.urlsplit(url)
    service = one(rendered, "Service", "session-sidecar-redis")
    assert parts.hostname == service["metadata"]["name"]
    assert parts.port == service["spec"]["ports"][0]["port"]
    assert parts.password == secret["REDIS_PASSWORD"]
    prefix = one(rendered, "ConfigMap", "session-sidecar")["data"]["SIDECAR_STORE_PREFIX"]
    assert "replace-me" not in store_label(url, prefix)  # the label never shows the password

    with pytest.raises(ValueError, match="unknown scheme"):
        check_url(url.replace("redis://", "reddis://"))


# ---------------------------------------------------------------------------- Redis


def test_redis_is_one_durable_non_root_pod_with_probes_and_a_volume(rendered: Docs) -> None:
    statefulset = one(rendered, "StatefulSet")
    spec = statefulset["spec"]
    assert spec["replicas"] == 1
    service = one(rendered, "Service", spec["serviceName"])
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"].items() <= spec["template"]["metadata"]["labels"].items()
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    redis = redis_container(rendered)
    assert re.fullmatch(r"redis:\d+\.\d+\.\d+(-[a-z0-9]+)?", redis["image"]), redis["image"]
    assert redis["securityContext"]["allowPrivilegeEscalation"] is False
    assert redis["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"cpu", "memory"} <= set(redis["resources"]["limits"])
    for probe in ("readinessProbe", "livenessProbe"):
        assert "redis-cli ping" in " ".join(redis[probe]["exec"]["command"])
    # the probes' redis-cli and the server's requirepass read the Secret's password
    secret_name = one(rendered, "Secret", "session-sidecar-store")["metadata"]["name"]
    env = env_of(redis)
    for name in ("REDIS_PASSWORD", "REDISCLI_AUTH"):
        assert env[name]["valueFrom"]["secretKeyRef"] == {
            "name": secret_name,
            "key": "REDIS_PASSWORD",
        }
    assert redis["args"][1:] == ["--requirepass", "$(REDIS_PASSWORD)"]
    # the data directory is the claim's volume; the config is the ConfigMap's
    mounts = {m["mountPath"]: m["name"] for m in redis["volumeMounts"]}
    (claim,) = spec["volumeClaimTemplates"]
    assert mounts["/data"] == claim["metadata"]["name"]
    conf = redis_conf(rendered)
    assert redis["args"][0] == f"{next(p for p, n in mounts.items() if n == 'config')}/redis.conf"
    assert {"appendonly yes", "appendfsync everysec", "dir /data"} <= set(conf.splitlines())
    assert "maxmemory-policy noeviction" in conf.splitlines()


def redis_conf(docs: Docs) -> str:
    text: str = one(docs, "ConfigMap", "session-sidecar-redis")["data"]["redis.conf"]
    return text


def local_conf(docs: Docs, directory: Path, *, broken: str = "") -> Path:
    """The ConfigMap's redis.conf as the pod reads it, but for its directory (redis-server
    enters it while reading the file, and /data is the pod's volume); `broken` added last."""
    lines = redis_conf(docs).splitlines()
    assert "dir /data" in lines
    conf = directory / "redis.conf"
    lines = [f"dir {directory}" if line == "dir /data" else line for line in lines]
    conf.write_text("\n".join([*lines, broken]), encoding="utf-8")
    return conf


def test_real_redis_refuses_a_broken_config(rendered: Docs, tmp_path: Path) -> None:
    # The check the pod's Redis makes at start, run here: a misspelt value is fatal.
    conf = local_conf(rendered, tmp_path, broken="appendfsync everysecond")
    result = subprocess.run(
        [require_redis_server(), str(conf), "--port", "0", "--logfile", ""],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0
    assert "everysecond" in result.stdout + result.stderr


def test_real_redis_takes_the_config_and_a_real_sidecar_with_the_pod_settings_gets_ready(
    rendered: Docs, tmp_path: Path, sidecars: SidecarSpawner
) -> None:
    conf = local_conf(rendered, tmp_path)
    secret = store_secret(rendered)
    server = RedisServer(
        require_redis_server(), tmp_path, config=conf, password=secret["REDIS_PASSWORD"]
    ).start()
    try:
        url = urllib.parse.urlsplit(secret["SIDECAR_STORE"])
        local = url._replace(netloc=f"{url.username}:{url.password}@127.0.0.1:{server.port}")
        settings = {
            **one(rendered, "ConfigMap", "session-sidecar")["data"],
            **one(rendered, "Secret", "session-sidecar-tokens")["stringData"],
            "SIDECAR_STORE": urllib.parse.urlunsplit(local),
        }
        named = {k.removeprefix("SIDECAR_").lower(): v for k, v in settings.items()}
        sidecar = sidecars(**{**named, "host": "127.0.0.1", "port": "0"})
        token = settings["SIDECAR_METRICS_TOKEN"]
        with requests.get(
            f"{sidecar.url}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10
        ) as response:
            assert response.status_code == 200
            name = settings["SIDECAR_STORE_NAME"]
            assert f'sidecar_sessions_capacity{{store="{name}"}} 1000.0' in response.text
            assert f'sidecar_store_up{{store="{name}"}} 1.0' in response.text

        # requirepass is in force: the URL without the password is never ready
        anonymous = urllib.parse.urlunsplit(local._replace(netloc=f"127.0.0.1:{server.port}"))
        child = sidecars.start(**{**named, "store": anonymous, "host": "127.0.0.1", "port": "0"})
        listening = re.compile(r"listening on (http://127\.0\.0\.1:\d+)")
        found = child.wait_for_line(listening, timeout=30)
        with requests.get(f"{found.group(1)}/readyz", timeout=10) as response:
            assert response.status_code == 503
            assert response.json()["checks"]["store"] is False
    finally:
        server.stop()
