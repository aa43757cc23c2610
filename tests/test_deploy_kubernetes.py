"""deploy/kubernetes, validated offline: no cluster runs here.

- Built-in kinds against the Kubernetes OpenAPI schemas (kubernetes-validate, strict: unknown
  fields fail), for Kubernetes 1.29, the first release with native sidecars on by default.
- ServiceMonitor and PrometheusRule against prometheus-operator's CRD schemas, with the npm
  package @kubernetes-models/prometheus-operator (tests/crd_validation, installed by
  `make test`); under CI a missing node or package fails, elsewhere it skips.
- The PrometheusRule's groups with promtool; the generated files against their sources.
- The ConfigMap's settings and the Secret's tokens start a real sidecar.
Each validator is also shown rejecting a broken manifest.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import kubernetes_validate
import pytest
import requests
import yaml
from conftest import SidecarSpawner, memory_store_name
from missing import missing

ROOT = Path(__file__).resolve().parents[1]
KUBERNETES = ROOT / "deploy" / "kubernetes"
CRD_VALIDATION = Path(__file__).resolve().parent / "crd_validation"
K8S_VERSION = "1.29.0"
BUILT_IN = {"ConfigMap", "Secret", "Deployment", "Service"}
CRDS = {"ServiceMonitor", "PrometheusRule"}


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "deploy_generate", ROOT / "deploy" / "generate.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def manifests() -> dict[str, dict[str, Any]]:
    """Every manifest the kustomization applies, by kind."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(KUBERNETES.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        (document,) = yaml.safe_load_all(path.read_text(encoding="utf-8"))
        kind = document["kind"] if document["kind"] != "ConfigMap" else document["metadata"]["name"]
        found[kind] = document
    return found


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in manifests().values() if doc["kind"] == kind]


def deployment() -> dict[str, Any]:
    (found,) = of_kind("Deployment")
    return found


def pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = deployment()["spec"]["template"]["spec"]
    return spec


def sidecar_container() -> dict[str, Any]:
    (container,) = pod_spec()["initContainers"]
    return container


def k8s_errors(document: dict[str, Any]) -> str | None:
    """None if the Kubernetes schemas accept `document`, else the validator's message."""
    try:
        kubernetes_validate.validate(document, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return str(exc.message)
    return None


def crd_validator() -> list[str]:
    """The node command that validates prometheus-operator kinds; fails under CI if missing."""
    node = shutil.which("node")
    installed = (CRD_VALIDATION / "node_modules" / "@kubernetes-models").is_dir()
    if node is None or not installed:
        message = (
            "node or tests/crd_validation/node_modules is missing "
            "(make test runs npm ci there; Debian package: nodejs)"
        )
        missing(message)
    return [node, str(CRD_VALIDATION / "validate.mjs")]


def crd_errors(*documents: dict[str, Any]) -> list[str | None]:
    result = subprocess.run(
        crd_validator(),
        input=json.dumps(documents),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [entry["error"] for entry in json.loads(result.stdout)]


# ---------------------------------------------------------------------------- what is there


def test_the_kustomization_applies_every_manifest() -> None:
    listed = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text(encoding="utf-8"))
    files = {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(listed["resources"]) == sorted(files)
    assert {doc["kind"] for doc in manifests().values()} == BUILT_IN | CRDS


# ---------------------------------------------------------------------------- built-in kinds


@pytest.mark.parametrize("name", sorted(n for n, d in manifests().items() if d["kind"] in BUILT_IN))
def test_built_in_kinds_match_the_kubernetes_schemas(name: str) -> None:
    assert k8s_errors(manifests()[name]) is None


def test_the_kubernetes_schemas_reject_a_misspelt_or_mistyped_field() -> None:
    misspelt = copy.deepcopy(deployment())
    container = misspelt["spec"]["template"]["spec"]["initContainers"][0]
    container["restartPolicyy"] = container.pop("restartPolicy")
    assert "restartPolicyy" in (k8s_errors(misspelt) or "")

    mistyped = copy.deepcopy(deployment())
    mistyped["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = "30s"
    assert "'30s' is not of type" in (k8s_errors(mistyped) or "")


# ---------------------------------------------------------------------------- CRDs


def test_service_monitor_and_prometheus_rule_match_the_operator_crd_schemas() -> None:
    documents = [d for d in manifests().values() if d["kind"] in CRDS]
    assert len(documents) == 2
    assert crd_errors(*documents) == [None, None]


def test_the_crd_schemas_reject_a_bad_duration_and_a_missing_selector() -> None:
    monitor = copy.deepcopy(of_kind("ServiceMonitor")[0])
    monitor["spec"]["endpoints"][0]["interval"] = "15 seconds"
    rule = copy.deepcopy(of_kind("PrometheusRule")[0])
    rule["spec"]["groups"][1]["rules"][0]["for"] = "5 minutes"
    unselected = copy.deepcopy(of_kind("ServiceMonitor")[0])
    del unselected["spec"]["selector"]

    errors = crd_errors(monitor, rule, unselected)

    assert "interval must match pattern" in (errors[0] or "")
    assert "for must match pattern" in (errors[1] or "")
    assert "required property selector" in (errors[2] or "")


# ---------------------------------------------------------------------------- generated files


@pytest.mark.parametrize(
    "path",
    [
        "prometheus/alerts.yml",
        "deploy/kubernetes/prometheusrule.yaml",
        "deploy/kubernetes/grafana-dashboards.yaml",
    ],
)
def test_generated_files_match_their_sources(path: str) -> None:
    generated = {
        p.relative_to(ROOT).as_posix(): text for p, text in load_generator().generate().items()
    }
    assert (ROOT / path).read_text(encoding="utf-8") == generated[path], "run `make manifests`"


def test_the_prometheus_rule_holds_exactly_the_shipped_rule_groups() -> None:
    (rule,) = of_kind("PrometheusRule")
    shipped = [
        group
        for name in ("rules.yml", "alerts.yml")
        for group in yaml.safe_load((ROOT / "prometheus" / name).read_text(encoding="utf-8"))[
            "groups"
        ]
    ]
    assert rule["spec"]["groups"] == shipped


def test_promtool_accepts_the_prometheus_rule_groups(promtool: str, tmp_path: Path) -> None:
    (rule,) = of_kind("PrometheusRule")
    groups = tmp_path / "groups.yml"
    groups.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}), encoding="utf-8")
    result = subprocess.run(
        [promtool, "check", "rules", str(groups)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 15 rules found" in result.stdout  # 6 recording rules, 9 alerts

    rule["spec"]["groups"][0]["rules"][0]["expr"] = (
        "max by (job (sidecar_sessions_utilization_ratio)"
    )
    groups.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}), encoding="utf-8")
    broken = subprocess.run(
        [promtool, "check", "rules", str(groups)], capture_output=True, text=True, check=False
    )
    assert broken.returncode != 0


def test_the_dashboard_configmap_holds_every_dashboard_for_grafanas_sidecar() -> None:
    configmap = manifests()["session-sidecar-dashboards"]
    assert configmap["metadata"]["labels"] == {"grafana_dashboard": "1"}
    dashboards = {p.name: p for p in (ROOT / "grafana" / "dashboards").glob("*.json")}
    assert set(configmap["data"]) == set(dashboards)
    for name, path in dashboards.items():
        assert json.loads(configmap["data"][name]) == json.loads(path.read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------- the pod


def test_the_sidecar_is_a_native_sidecar_with_its_probes() -> None:
    sidecar = sidecar_container()
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert sidecar["startupProbe"]["httpGet"]["path"] == "/livez"
    assert sidecar["readinessProbe"]["httpGet"]["path"] == "/readyz"
    (port,) = sidecar["ports"]
    app_env = {e["name"]: e for e in pod_spec()["containers"][0]["env"]}
    assert app_env["SESSION_SIDECAR_URL"]["value"] == f"http://127.0.0.1:{port['containerPort']}"


def test_every_container_runs_non_root_read_only_unprivileged_with_resources() -> None:
    spec = pod_spec()
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] != 0
    for container in [*spec["initContainers"], *spec["containers"]]:
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False, container["name"]
        assert security["readOnlyRootFilesystem"] is True, container["name"]
        assert security["capabilities"]["drop"] == ["ALL"], container["name"]
        assert {"cpu", "memory"} <= set(container["resources"]["requests"]), container["name"]
        assert {"cpu", "memory"} <= set(container["resources"]["limits"]), container["name"]


def test_the_grace_period_covers_the_pre_stop_pause_and_the_sidecars_drain() -> None:
    spec = pod_spec()
    (app,) = spec["containers"]
    command = app["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    drain = 5  # README: requests in flight finish for up to 5 s
    assert spec["terminationGracePeriodSeconds"] >= int(command[1]) + drain + 10


def test_settings_come_from_the_configmap_and_tokens_from_the_secret() -> None:
    refs = sidecar_container()["envFrom"]
    assert refs == [
        {"configMapRef": {"name": manifests()["session-sidecar"]["metadata"]["name"]}},
        {"secretRef": {"name": manifests()["Secret"]["metadata"]["name"]}},
    ]
    settings = manifests()["session-sidecar"]["data"]
    assert not any("TOKEN" in name for name in settings)
    assert settings["SIDECAR_HOST"] == "0.0.0.0"
    assert {"SIDECAR_API_TOKEN", "SIDECAR_METRICS_TOKEN"} <= set(
        manifests()["Secret"]["stringData"]
    )


def test_the_service_monitor_scrapes_the_sidecar_port_as_job_sidecar() -> None:
    service, monitor = manifests()["Service"], manifests()["ServiceMonitor"]
    labels = deployment()["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    (endpoint,) = monitor["spec"]["endpoints"]
    (port,) = service["spec"]["ports"]
    assert endpoint["port"] == port["name"]
    assert port["targetPort"] == sidecar_container()["ports"][0]["containerPort"]
    assert endpoint["path"] == "/metrics"
    assert {"targetLabel": "job", "replacement": "sidecar"} in endpoint["relabelings"]
    credentials = endpoint["authorization"]["credentials"]
    assert credentials["name"] == manifests()["Secret"]["metadata"]["name"]
    assert credentials["key"] in manifests()["Secret"]["stringData"]


def pod_settings(**overrides: str) -> dict[str, str]:
    """The ConfigMap's and Secret's variables as spawn_sidecar settings (names without SIDECAR_)."""
    variables = {**manifests()["session-sidecar"]["data"], **manifests()["Secret"]["stringData"]}
    settings = {re.sub("^SIDECAR_", "", k).lower(): v for k, v in variables.items()}
    return {**settings, **overrides}


def test_the_pods_settings_and_tokens_start_a_real_sidecar(sidecars: SidecarSpawner) -> None:
    # On loopback and a free port here; everything else as the pod has it.
    sidecar = sidecars(**pod_settings(host="127.0.0.1", port="0"))
    tokens = manifests()["Secret"]["stringData"]
    with requests.get(f"{sidecar.url}/metrics", timeout=10) as response:
        assert response.status_code == 401
    with requests.get(
        f"{sidecar.url}/metrics",
        headers={"Authorization": f"Bearer {tokens['SIDECAR_METRICS_TOKEN']}"},
        timeout=10,
    ) as response:
        assert response.status_code == 200
        store = memory_store_name(sidecar.url)
        assert f'sidecar_sessions_capacity{{store="{store}"}} 1000.0' in response.text


def test_the_pods_settings_without_the_secret_refuse_to_serve_on_every_interface(
    sidecars: SidecarSpawner,
) -> None:
    settings = {
        re.sub("^SIDECAR_", "", k).lower(): v
        for k, v in manifests()["session-sidecar"]["data"].items()
    }
    child = sidecars.start(**{**settings, "port": "0"})
    assert child.wait(30) == 2
    assert "SIDECAR_API_TOKEN" in child.output() or "allow-unauthenticated" in child.output()


def _bytes(quantity: str) -> int:
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}
    return int(quantity[:-2]) * units[quantity[-2:]]


def test_what_unauthenticated_connections_can_buffer_fits_the_pod() -> None:
    """waitress buffers request bodies (512 KiB in memory, the rest in /tmp, up to the body
    limit plus 64 KiB) before the app, and its token check, see them. Before: 2,000
    connections (~1 GiB of memory) against a 256Mi limit, 16 MiB of /tmp each against 16Mi."""
    from sidecar.server import _BODY_SLACK
    from sidecar.settings import Settings

    env = manifests()["session-sidecar"]["data"]
    settings = Settings(
        connection_limit=int(env["SIDECAR_CONNECTION_LIMIT"]),
        max_body_bytes=int(env.get("SIDECAR_MAX_BODY_BYTES", Settings().max_body_bytes)),
    )
    sidecar = sidecar_container()
    (tmp,) = [v for v in pod_spec()["volumes"] if v["name"] == "sidecar-tmp"]
    in_memory = settings.connection_limit * (512 << 10)
    on_disk = settings.connection_limit * (settings.max_body_bytes + _BODY_SLACK - (512 << 10))

    assert in_memory + (64 << 20) <= _bytes(sidecar["resources"]["limits"]["memory"])
    assert on_disk <= _bytes(tmp["emptyDir"]["sizeLimit"])
    for probe in ("livenessProbe", "readinessProbe"):
        assert sidecar[probe]["timeoutSeconds"] >= 5, probe
