"""The Kubernetes manifests (deploy/k8s/) without a cluster: every resource passes Kubernetes' own
schema (kubernetes-validate bundles it), and the Deployment asks for what ``asr-server`` really
accepts: its flags parse, the ConfigMap loads with the server's strict config loader, and ports,
probes, metrics annotations, mounts, the grace period and the CPU request agree with that config.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from server.__main__ import parse_args
from server.config import ServerConfig, load_server_config

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
KUBECTL = shutil.which("kubectl")
# 1.27: the first release with gRPC probes generally available; 1.37: the newest schemas the package bundles.
VERSIONS = ["1.27.0", "1.37.0"]
VARIANTS = ["base", "overlays/gpu", "overlays/active-streams"]
# Default-search CPU per real-time stream, BENCHMARKS.md "Server" (64 streams, 1.28 cores over 2 workers).
STREAM_MILLICORES = 20

needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="needs kubectl (its built-in kustomize renders overlays)")


def plain_manifests() -> dict[str, list[dict[str, Any]]]:
    """Every whole resource on disk, parsed: the base and the Secret example (the overlays' files are
    patches, checked once kustomize has applied them)."""
    files = [*K8S.glob("base/*.yaml"), K8S / "secret.example.yaml"]
    return {
        str(path.relative_to(K8S)): [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
        for path in sorted(files)
        if path.name != "kustomization.yaml"
    }


def render(variant: str) -> dict[str, dict[str, Any]]:
    """``kubectl kustomize`` output as {kind: resource}."""
    assert KUBECTL is not None
    text = subprocess.run([KUBECTL, "kustomize", str(K8S / variant)], check=True, capture_output=True, text=True).stdout
    return {doc["kind"]: doc for doc in yaml.safe_load_all(text) if doc}


def base_resources() -> dict[str, dict[str, Any]]:
    """The base's resources by kind, read straight from the files its kustomization lists."""
    kustomization = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    docs = [yaml.safe_load((K8S / "base" / name).read_text()) for name in kustomization["resources"]]
    return {doc["kind"]: doc for doc in docs}


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_passes_the_kubernetes_schema_strictly(version):
    manifests = plain_manifests()
    assert {"base/deployment.yaml", "base/hpa.yaml", "secret.example.yaml"} <= set(manifests)
    for docs in manifests.values():
        for doc in docs:
            kubernetes_validate.validate(doc, version, strict=True)


def test_the_schema_check_catches_a_mistyped_field():
    deployment = base_resources()["Deployment"]
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"]["prot"] = 50051
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSIONS[-1], strict=True)


@needs_kubectl
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_renders_and_passes_the_schema(variant):
    resources = render(variant)
    assert set(resources) == {"ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"}
    for version in VERSIONS:
        for resource in resources.values():
            kubernetes_validate.validate(resource, version, strict=True)


def server_config(resources: dict[str, Any]) -> tuple[ServerConfig, dict[str, Any]]:
    """The ServerConfig a pod of this Deployment runs with, loaded the way asr-server loads it, and the container.

    Flags parse with asr-server's own parser (an unknown flag exits), the ``--config`` file is the ConfigMap key
    mounted at that path, and the container's ASR_SERVER_* variables apply on top, all strictly checked.
    """
    pod = resources["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    config_path, flags = parse_args(container["args"])
    assert config_path is not None
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volume = next(v for v in pod["volumes"] if v["name"] == mounts[str(Path(config_path).parent)])
    config_map = resources["ConfigMap"]
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    environ = {e["name"]: e["value"] for e in container.get("env", []) if e["name"].startswith("ASR_SERVER_")}
    local = ROOT / ".pytest_cache" / "k8s-server.yaml"
    local.parent.mkdir(exist_ok=True)
    local.write_text(config_map["data"][Path(config_path).name])
    return load_server_config(local, flags, environ), container


def test_the_deployment_matches_what_asr_server_accepts():
    resources = base_resources()
    cfg, container = server_config(resources)
    pod_template = resources["Deployment"]["spec"]["template"]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "grpc": cfg.port,
        "web": cfg.web_port,
        "metrics": cfg.metrics_port,
    }
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == cfg.port  # grpc.health.v1: open without a token
    annotations = pod_template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/port"] == str(cfg.metrics_port)
    grace = pod_template["spec"]["terminationGracePeriodSeconds"]
    assert grace > cfg.drain_s + cfg.grace_period_s  # SIGTERM drains before the kubelet's SIGKILL
    liveness = container["livenessProbe"]
    assert liveness["periodSeconds"] * liveness["failureThreshold"] > cfg.drain_s + cfg.grace_period_s
    # The tokens file is a key of the Secret mounted where tokens_file points.
    secrets_mount = next(m for m in container["volumeMounts"] if cfg.tokens_file.startswith(m["mountPath"] + "/"))
    volume = next(v for v in pod_template["spec"]["volumes"] if v["name"] == secrets_mount["name"])
    (secret,) = plain_manifests()["secret.example.yaml"]
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    assert Path(cfg.tokens_file).name in secret["stringData"]
    # One process per pod, and no more streams than the requested CPU serves at the measured cost.
    assert cfg.workers == 1
    cpu_millicores = 1000 * float(container["resources"]["requests"]["cpu"])
    assert cfg.max_concurrent_streams * STREAM_MILLICORES <= cpu_millicores


def test_the_image_is_the_one_the_dockerfile_builds_and_compose_runs():
    resources = base_resources()
    cfg, container = server_config(resources)
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert container["image"] == compose["x-asr-server"]["image"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    exposed = {int(port) for line in dockerfile.splitlines() if line.startswith("EXPOSE") for port in line.split()[1:]}
    assert {cfg.port, cfg.web_port, cfg.metrics_port} <= exposed
    assert f"COPY {cfg.model} " in dockerfile  # the model the config serves is in the image
    assert "USER asr" in dockerfile and "--uid 10001" in dockerfile
    assert resources["Deployment"]["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == 10001


def test_services_autoscaler_and_budget_select_the_deployments_pods():
    resources = base_resources()
    deployment = resources["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    port_names = {p["name"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]}
    services = [yaml.safe_load((K8S / "base" / n).read_text()) for n in ("service-grpc.yaml", "service-web.yaml")]
    grpc_service, web_service = services
    assert grpc_service["spec"]["clusterIP"] == "None"  # headless: clients balance over every pod themselves
    assert web_service["spec"]["ports"][0]["targetPort"] == "web"
    for service in services:
        assert service["spec"]["selector"].items() <= labels.items()
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    assert resources["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert resources["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()


@needs_kubectl
def test_the_gpu_overlay_runs_the_model_on_a_gpu_node():
    resources = render("overlays/gpu")
    cfg, container = server_config(resources)
    assert cfg.device == "cuda"
    assert int(container["resources"]["limits"]["nvidia.com/gpu"]) == 1
    pod = resources["Deployment"]["spec"]["template"]["spec"]
    assert pod["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    assert container["image"].endswith(":cuda")
    assert {e["name"] for e in container["env"]} >= {"ASR_SERVER_DEVICE", "NUMBA_CACHE_DIR"}  # merged, not replaced


@needs_kubectl
def test_the_active_streams_overlay_scales_on_the_servers_gauge():
    from server.metrics import ServerMetrics

    (metric,) = render("overlays/active-streams")["HorizontalPodAutoscaler"]["spec"]["metrics"]
    exported = {m.name for m in ServerMetrics().registry.collect()}
    assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] in exported
