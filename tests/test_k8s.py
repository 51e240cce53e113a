"""The Kubernetes manifests (deploy/k8s/) without a cluster: every resource passes Kubernetes' own
schema (kubernetes-validate bundles it), and the Deployment asks for what ``asr-server`` really
accepts: its flags parse, the ConfigMap loads with the server's strict config loader, and ports,
probes, metrics annotations, mounts, the grace period and the CPU request agree with that config.

The overlays are rendered by :func:`kustomize` below, a small renderer of just the kustomize features
deploy/k8s uses, so they are rendered and checked everywhere: CI machines have no kubectl new enough
for these kustomizations. Where kubectl is installed, its output must equal the renderer's.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import schema_contents

from server.__main__ import parse_args
from server.config import ServerConfig, load_server_config

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
KUBECTL = shutil.which("kubectl")
# 1.27: the first release with gRPC probes generally available; 1.37: the newest schemas the package bundles.
VERSIONS = ["1.27.0", "1.37.0"]
VARIANTS = ["base", "overlays/gpu", "overlays/active-streams"]
# CPU per real-time stream of models/english.pt with 2 s of Whisper history (BENCHMARKS.md "Whisper front end:
# streaming": 0.26-0.30 s per audio second on a shared core; "Server": 0.20 cores for one stream).
STREAM_MILLICORES = 250

needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="needs kubectl (to compare the renderer with kustomize)")


# --- A minimal kustomize -------------------------------------------------------------------------------------------
# Just what deploy/k8s uses: `resources` (files, and directories holding their own kustomization), `images`
# (name, newName, newTag) and `patches` given by `path` (strategic-merge patches). Anything else raises
# KustomizeError rather than being skipped, so a feature added to a kustomization later fails here until it is
# implemented (and checked against kubectl). Order of work, as kustomize's: the resources (each directory
# rendered whole first), then the patches, then the images.

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
KUSTOMIZATION_KEYS = {"apiVersion", "kind", "resources", "images", "patches"}
# How a patch merges into a list, from Kubernetes' own `x-kubernetes-patch-merge-key` (k8s.io/api; kustomize
# reads the same schema, and test_the_merge_keys_are_kubernetes_own compares): a patch's element merges into the
# element with the same key, or is added. Matched on the end of the field path, so container ports (merged by
# containerPort, not by name) differ from a Service's (by port). Every other list (tolerations, args and an HPA's
# metrics among them) is replaced whole by the patch's, as Kubernetes does for lists with no merge key. A list
# Kubernetes merges by a key missing here would be replaced instead: add it here before patching it.
MERGE_KEYS: dict[tuple[str, ...], str] = {
    ("containers",): "name",
    ("initContainers",): "name",
    ("env",): "name",
    ("volumes",): "name",
    ("volumeMounts",): "mountPath",
    ("containers", "ports"): "containerPort",
    ("initContainers", "ports"): "containerPort",
    ("spec", "ports"): "port",  # a Service's
}


class KustomizeError(Exception):
    """A kustomization kustomize would refuse, or one using a feature :func:`kustomize` does not implement."""


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """The resources the kustomization in ``directory`` renders, in the order its ``resources`` list them
    (``kubectl kustomize`` sorts them by kind; compare them by :func:`resource_id`)."""
    kustomization, path = read_kustomization(directory)
    resources: list[dict[str, Any]] = []
    for entry in kustomization.get("resources", []):
        for resource in load_resource(directory, entry, path):
            if any(resource_id(resource) == resource_id(seen) for seen in resources):
                raise KustomizeError(f"{path}: {resource_id(resource)} is listed twice (by resource {entry!r})")
            resources.append(resource)
    for number, entry in enumerate(kustomization.get("patches", [])):
        if not isinstance(entry, dict) or set(entry) != {"path"}:
            raise KustomizeError(f"{path}: patches[{number}] is {entry!r}; only {{path: FILE}} is implemented")
        for patch in load_documents(inside(directory, entry["path"], path)):
            apply_patch(resources, patch, f"{path}: patches[{number}] ({entry['path']})")
    for number, entry in enumerate(kustomization.get("images", [])):
        if not isinstance(entry, dict) or "name" not in entry or not set(entry) <= {"name", "newName", "newTag"}:
            raise KustomizeError(
                f"{path}: images[{number}] is {entry!r}; only name, newName and newTag are implemented"
            )
        if not all(isinstance(value, str) for value in entry.values()):
            raise KustomizeError(f"{path}: images[{number}] is {entry!r}; quote each value (YAML reads 1.10 as 1.1)")
        for resource in resources:
            set_images(resource, entry)
    return resources


def read_kustomization(directory: Path) -> tuple[dict[str, Any], Path]:
    """The kustomization in ``directory`` and its file; refused if it uses a key :func:`kustomize` lacks."""
    found = [directory / name for name in KUSTOMIZATION_FILES if (directory / name).is_file()]
    if len(found) != 1:
        raise KustomizeError(f"{directory}: expected one of {', '.join(KUSTOMIZATION_FILES)}, found {len(found)}")
    (path,) = found
    kustomization = yaml.safe_load(path.read_text()) or {}
    if not isinstance(kustomization, dict):
        raise KustomizeError(f"{path}: not a mapping")
    unsupported = set(kustomization) - KUSTOMIZATION_KEYS
    if unsupported:
        raise KustomizeError(
            f"{path}: {', '.join(sorted(unsupported))} not implemented by tests/test_k8s.py's kustomize() "
            f"(it implements {', '.join(sorted(KUSTOMIZATION_KEYS))}): implement it there, checked against kubectl"
        )
    if kustomization.get("apiVersion", "kustomize.config.k8s.io/v1beta1") != "kustomize.config.k8s.io/v1beta1" or (
        kustomization.get("kind", "Kustomization") != "Kustomization"
    ):
        raise KustomizeError(f"{path}: only kind Kustomization, apiVersion kustomize.config.k8s.io/v1beta1")
    return kustomization, path


def load_resource(directory: Path, entry: str, kustomization: Path) -> list[dict[str, Any]]:
    """One ``resources`` entry: a directory (a kustomization, rendered, wherever it is) or a file inside
    ``directory`` (kustomize refuses files outside the kustomization's root)."""
    target = directory / entry
    if target.is_dir():
        return kustomize(target.resolve())
    resources = load_documents(inside(directory, entry, kustomization))
    for resource in resources:
        resource_id(resource)  # refuses a document that is not a named resource (a List, say)
    return resources


def inside(directory: Path, entry: str, kustomization: Path) -> Path:
    """The file ``entry`` names, refused (as kustomize does) if it is missing or outside ``directory``."""
    path = (directory / entry).resolve()
    if not path.is_file() or not path.is_relative_to(directory.resolve()):
        raise KustomizeError(f"{kustomization}: {entry!r} is not a file in or below {directory}")
    return path


def load_documents(path: Path) -> list[dict[str, Any]]:
    """The non-empty YAML documents of a file; each must be a mapping."""
    documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    if not all(isinstance(doc, dict) for doc in documents):
        raise KustomizeError(f"{path}: every document must be a mapping (JSON 6902 patches are not implemented)")
    return documents


def resource_id(resource: dict[str, Any]) -> tuple[str, str, str, str]:
    """(apiVersion, kind, namespace, name): what kustomize identifies a resource, and a patch its target, by."""
    metadata = resource.get("metadata") or {}
    if not (resource.get("apiVersion") and resource.get("kind") and metadata.get("name")):
        raise KustomizeError(f"not a named resource (apiVersion, kind, metadata.name): {resource!r:.200}")
    return resource["apiVersion"], resource["kind"], metadata.get("namespace", ""), metadata["name"]


def apply_patch(resources: list[dict[str, Any]], patch: dict[str, Any], where: str) -> None:
    """Merge a strategic-merge ``patch`` into the one resource with its apiVersion, kind, namespace and name."""
    refuse_directives(patch, where)
    target = resource_id(patch)
    matches = [number for number, resource in enumerate(resources) if resource_id(resource) == target]
    if len(matches) != 1:
        raise KustomizeError(f"{where}: no resource matches {target}")
    resources[matches[0]] = merge(resources[matches[0]], patch, ())


def refuse_directives(patch: Any, where: str) -> None:
    """Refuse strategic-merge directives ($patch, $setElementOrder, $retainKeys, ...): not implemented."""
    if isinstance(patch, dict):
        for key, value in patch.items():
            if str(key).startswith("$"):
                raise KustomizeError(f"{where}: the directive {key} is not implemented")
            refuse_directives(value, where)
    elif isinstance(patch, list):
        for item in patch:
            refuse_directives(item, where)


def merge(target: Any, patch: Any, path: tuple[str, ...]) -> Any:
    """``target`` with a strategic-merge ``patch`` applied (neither is modified); ``path``: the field names leading
    here. Maps merge key by key (a null deletes the key); a list with a merge key in MERGE_KEYS merges element by
    element: the patch's elements in the patch's order, each merged into the target's element with the same key (or
    new), then the target's other elements in their order, as kustomize orders them. Other lists and scalars are
    replaced by the patch's."""
    if isinstance(patch, dict):
        merged = copy.deepcopy(target) if isinstance(target, dict) else {}
        for key, value in patch.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = merge(merged.get(key), value, (*path, key))
        return merged
    key = next((key for tail, key in MERGE_KEYS.items() if path[-len(tail) :] == tail), None)
    if not isinstance(patch, list) or key is None:
        return copy.deepcopy(patch)
    where = ".".join(path)
    existing = target if isinstance(target, list) else []
    for item in existing + patch:
        if not isinstance(item, dict) or key not in item:
            raise KustomizeError(f"{where}: every element needs its merge key {key!r}: {item!r:.200}")
        if "protocol" in item and key in ("containerPort", "port"):
            # Kubernetes keys ports on (port, protocol); this merge on the port alone.
            raise KustomizeError(f"{where}: merging ports that name a protocol is not implemented: {item!r:.200}")
    for items, side in ((existing, "target"), (patch, "patch")):
        counts = Counter(item[key] for item in items)
        if max(counts.values(), default=1) > 1:
            raise KustomizeError(
                f"{where}: the {side} repeats a {key}: {sorted(k for k, n in counts.items() if n > 1)}"
            )
    by_key = {item[key]: item for item in existing}
    patched = {item[key] for item in patch}
    return [merge(by_key.get(item[key]), item, path) for item in patch] + [
        copy.deepcopy(item) for item in existing if item[key] not in patched
    ]


def set_images(node: Any, image: dict[str, str]) -> None:
    """Apply one ``images`` entry to every container and init container under ``node``: an image whose name (the
    part before ``:tag``) is ``image["name"]`` gets ``newName`` and ``newTag`` where given."""
    if isinstance(node, list):
        for item in node:
            set_images(item, image)
        return
    if not isinstance(node, dict):
        return
    for field, value in node.items():
        if field in ("containers", "initContainers") and isinstance(value, list):
            for container in value:
                if isinstance(container, dict) and isinstance(container.get("image"), str):
                    container["image"] = retag(container["image"], image)
        set_images(value, image)


def retag(reference: str, image: dict[str, str]) -> str:
    """``reference`` (REGISTRY[:PORT]/NAME[:TAG]) after one ``images`` entry."""
    if "@" in reference:
        raise KustomizeError(f"image {reference!r}: digests are not implemented")
    slash = reference.rfind("/")
    colon = reference.rfind(":")
    name, tag = (reference[:colon], reference[colon + 1 :]) if colon > slash else (reference, None)
    if name != image["name"]:
        return reference
    name = image.get("newName", name)
    tag = image.get("newTag", tag)
    return name if tag is None else f"{name}:{tag}"


def kubectl_kustomize(directory: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize`` output: the real thing the renderer is compared with."""
    assert KUBECTL is not None
    text = subprocess.run([KUBECTL, "kustomize", str(directory)], check=True, capture_output=True, text=True).stdout
    return [doc for doc in yaml.safe_load_all(text) if doc]


def by_id(resources: list[dict[str, Any]]) -> dict[tuple[str, str, str, str], dict[str, Any]]:
    """The resources by :func:`resource_id`, which must be unique."""
    ids = {resource_id(resource): resource for resource in resources}
    assert len(ids) == len(resources)
    return ids


# --- The manifests -------------------------------------------------------------------------------------------------


def plain_manifests() -> dict[str, list[dict[str, Any]]]:
    """Every whole resource on disk, parsed: the base and the Secret example (the overlays' files are
    patches, checked once kustomize has applied them)."""
    files = [*K8S.glob("base/*.yaml"), K8S / "secret.example.yaml"]
    return {
        str(path.relative_to(K8S)): [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
        for path in sorted(files)
        if path.name != "kustomization.yaml"
    }


def by_kind(resources: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The resources that are the only one of their kind, by kind (not the two Services)."""
    kinds = Counter(resource["kind"] for resource in resources)
    return {resource["kind"]: resource for resource in resources if kinds[resource["kind"]] == 1}


def render(variant: str) -> dict[str, dict[str, Any]]:
    """A variant (base or overlay) as :func:`kustomize` renders it, by kind."""
    return by_kind(kustomize(K8S / variant))


def base_resources() -> dict[str, dict[str, Any]]:
    """The base's resources by kind, read straight from the files its kustomization lists."""
    kustomization = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    docs = [yaml.safe_load((K8S / "base" / name).read_text()) for name in kustomization["resources"]]
    return by_kind(docs)


def write_tree(root: Path, files: dict[str, Any]) -> None:
    """Write {relative path: YAML document, a list of documents, or raw text} under ``root``."""
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            path.write_text(content)
        else:
            path.write_text(yaml.safe_dump_all(content if isinstance(content, list) else [content], sort_keys=False))


def merge_example(root: Path) -> Path:
    """A base (a Deployment file, and a directory of Services with its own kustomization) and an overlay on it
    that exercises each rule of :func:`merge` and :func:`retag`; returns the overlay's directory."""
    container = {
        "name": "main",
        "image": "registry:5000/team/app:1",
        "args": ["--x", "--y"],
        "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}, {"name": "C", "value": "3"}],
        "ports": [{"name": "grpc", "containerPort": 50051}, {"name": "web", "containerPort": 8080}],
        "volumeMounts": [{"name": "config", "mountPath": "/config"}, {"name": "tmp", "mountPath": "/tmp"}],
        "resources": {"limits": {"cpu": "2"}},
    }
    pod = {
        "tolerations": [{"key": "a", "operator": "Exists"}],
        "nodeSelector": {"disk": "ssd"},
        "initContainers": [{"name": "init", "image": "app"}],
        "containers": [container, {"name": "sidecar", "image": "proxy:1"}],
        "volumes": [{"name": "config", "configMap": {"name": "cfg"}}, {"name": "tmp", "emptyDir": {}}],
    }
    labels = {"app": "app"}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "app"},
        "spec": {"selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels}, "spec": pod}},
    }
    services = [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name},
            "spec": {"selector": labels, "ports": [{"name": "http", "port": 80, "targetPort": "web"}]},
        }
        for name in ("one", "two")
    ]
    patch = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: app
spec:
  template:
    spec:
      tolerations: [{key: b, operator: Exists}]
      nodeSelector: {gpu: "true", disk: null}
      containers:
        - name: extra
          image: extra:1
        - name: main
          args: ["--z"]
          env: [{name: D, value: "4"}, {name: B, value: "22"}]
          ports: [{name: metrics, containerPort: 9464}, {name: http, containerPort: 8080}]
          volumeMounts: [{name: scratch, mountPath: /tmp}]
          resources: {limits: {nvidia.com/gpu: 1}}
      volumes: [{name: scratch, emptyDir: {medium: Memory}}]
---
apiVersion: v1
kind: Service
metadata:
  name: two
spec:
  ports: [{name: metrics, port: 9464, targetPort: metrics}]
"""
    write_tree(
        root,
        {
            "base/kustomization.yaml": {"resources": ["deployment.yaml", "services"]},
            "base/deployment.yaml": deployment,
            "base/services/kustomization.yaml": {"resources": ["services.yaml"]},
            "base/services/services.yaml": services,
            "overlay/patch.yaml": patch,
            "overlay/kustomization.yaml": {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": ["../base"],
                # In order: the init container's `app` is renamed first, so the second entry retags it too.
                "images": [
                    {"name": "app", "newName": "registry:5000/team/app"},
                    {"name": "registry:5000/team/app", "newTag": "2"},
                    {"name": "proxy", "newName": "mirror/proxy"},
                ],
                "patches": [{"path": "patch.yaml"}],
            },
        },
    )
    return root / "overlay"


def test_the_renderer_merges_the_way_kustomize_does(tmp_path):
    """Expected values as ``kubectl kustomize`` (v5.5) renders merge_example; the kubectl test re-checks them."""
    resources = by_id(kustomize(merge_example(tmp_path)))
    assert list(resources) == [
        ("apps/v1", "Deployment", "", "app"),
        ("v1", "Service", "", "one"),
        ("v1", "Service", "", "two"),
    ]
    pod = resources["apps/v1", "Deployment", "", "app"]["spec"]["template"]["spec"]
    assert pod["tolerations"] == [{"key": "b", "operator": "Exists"}]  # no merge key: replaced
    assert pod["nodeSelector"] == {"gpu": "true"}  # a map merges; null deletes
    assert pod["initContainers"] == [{"name": "init", "image": "registry:5000/team/app:2"}]
    # The patch's containers first, in its order (`extra` is new), then the base's others.
    assert [(c["name"], c["image"]) for c in pod["containers"]] == [
        ("extra", "extra:1"),
        ("main", "registry:5000/team/app:2"),
        ("sidecar", "mirror/proxy:1"),
    ]
    main = pod["containers"][1]
    assert main["args"] == ["--z"]
    assert main["env"] == [
        {"name": "D", "value": "4"},
        {"name": "B", "value": "22"},
        {"name": "A", "value": "1"},
        {"name": "C", "value": "3"},
    ]
    assert main["ports"] == [  # by containerPort: 8080 is renamed, not added
        {"name": "metrics", "containerPort": 9464},
        {"name": "http", "containerPort": 8080},
        {"name": "grpc", "containerPort": 50051},
    ]
    assert main["volumeMounts"] == [
        {"name": "scratch", "mountPath": "/tmp"},
        {"name": "config", "mountPath": "/config"},
    ]
    assert main["resources"] == {"limits": {"cpu": "2", "nvidia.com/gpu": 1}}
    assert [v["name"] for v in pod["volumes"]] == ["scratch", "config", "tmp"]
    assert [p["port"] for p in resources["v1", "Service", "", "two"]["spec"]["ports"]] == [9464, 80]
    assert resources["v1", "Service", "", "one"]["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "web"}]


CONFIG_MAP = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"a": "1"}}
DEPLOYMENT_PATCH = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "app"}}


@pytest.mark.parametrize(
    "kustomization, files, message",
    [
        ({"resources": ["cm.yaml"], "namePrefix": "x-"}, {}, "namePrefix not implemented"),
        ({"resources": ["cm.yaml"], "patchesStrategicMerge": ["p.yaml"]}, {}, "patchesStrategicMerge not implemented"),
        ({"kind": "Component", "resources": ["cm.yaml"]}, {}, "only kind Kustomization"),
        ({"resources": ["cm.yaml", "cm.yaml"]}, {}, "listed twice"),
        ({"resources": ["../outside.yaml"]}, {"../outside.yaml": CONFIG_MAP}, "not a file in or below"),
        ({"resources": ["missing.yaml"]}, {}, "not a file in or below"),
        ({"resources": ["cm.yaml"], "images": [{"name": "app", "digest": "sha256:00"}]}, {}, "digest"),
        ({"resources": ["cm.yaml"], "images": [{"name": "app", "newTag": 1.10}]}, {}, "quote each value"),
        (
            {"resources": ["cm.yaml"], "patches": [{"path": "p.yaml", "target": {"kind": "ConfigMap"}}]},
            {"p.yaml": CONFIG_MAP},
            "only {path: FILE}",
        ),
        ({"resources": ["cm.yaml"], "patches": [{"path": "p.yaml"}]}, {"p.yaml": DEPLOYMENT_PATCH}, "no resource"),
        (
            {"resources": ["cm.yaml"], "patches": [{"path": "p.yaml"}]},
            {"p.yaml": [[{"op": "remove", "path": "/data/a"}]]},
            "JSON 6902",
        ),
        (
            {"resources": ["cm.yaml"], "patches": [{"path": "p.yaml"}]},
            {"p.yaml": {**CONFIG_MAP, "data": {"$patch": "replace"}}},
            r"directive \$patch",
        ),
    ],
)
def test_the_renderer_refuses_what_it_does_not_implement(tmp_path, kustomization, files, message):
    write_tree(tmp_path / "k", {"kustomization.yaml": kustomization, "cm.yaml": CONFIG_MAP, **files})
    with pytest.raises(KustomizeError, match=message):
        kustomize(tmp_path / "k")


@pytest.mark.parametrize(
    "container",
    [
        {"name": "main", "env": [{"value": "cuda"}]},  # kustomize silently empties the list
        {"name": "main", "ports": [{"containerPort": 50051, "protocol": "UDP"}]},
        {"name": "main", "env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]},
    ],
)
def test_the_renderer_refuses_list_merges_it_does_not_implement(tmp_path, container):
    pod = {"containers": [{"name": "main", "image": "app", "ports": [{"containerPort": 50051}]}]}
    deployment = {**DEPLOYMENT_PATCH, "spec": {"template": {"spec": pod}}}
    patch = {**DEPLOYMENT_PATCH, "spec": {"template": {"spec": {"containers": [container]}}}}
    files = {"kustomization.yaml": {"resources": ["d.yaml"], "patches": [{"path": "p.yaml"}]}}
    write_tree(tmp_path, {**files, "d.yaml": deployment, "p.yaml": patch})
    with pytest.raises(KustomizeError, match="merge key|protocol|repeats"):
        kustomize(tmp_path)


def test_the_merge_keys_are_kubernetes_own():
    """MERGE_KEYS against x-kubernetes-patch-merge-key in the OpenAPI schemas kubernetes-validate bundles."""
    where = {
        ("containers",): ("io.k8s.api.core.v1.PodSpec", "containers"),
        ("initContainers",): ("io.k8s.api.core.v1.PodSpec", "initContainers"),
        ("volumes",): ("io.k8s.api.core.v1.PodSpec", "volumes"),
        ("env",): ("io.k8s.api.core.v1.Container", "env"),
        ("volumeMounts",): ("io.k8s.api.core.v1.Container", "volumeMounts"),
        ("containers", "ports"): ("io.k8s.api.core.v1.Container", "ports"),
        ("initContainers", "ports"): ("io.k8s.api.core.v1.Container", "ports"),
        ("spec", "ports"): ("io.k8s.api.core.v1.ServiceSpec", "ports"),
    }
    assert set(where) == set(MERGE_KEYS)
    for version in VERSIONS:
        definitions = schema_contents(f"kubernetes-json-schema/v{version}-local/_definitions.json", version)["$defs"]
        for tail, (definition, field) in where.items():
            schema = definitions[definition]["properties"][field]
            assert "merge" in schema["x-kubernetes-patch-strategy"].split(",")
            assert schema["x-kubernetes-patch-merge-key"] == MERGE_KEYS[tail]
        # The lists the overlays replace are ones Kubernetes replaces too.
        assert (
            "x-kubernetes-patch-merge-key" not in definitions["io.k8s.api.core.v1.PodSpec"]["properties"]["tolerations"]
        )
        hpa_spec = definitions["io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerSpec"]["properties"]
        assert "x-kubernetes-patch-merge-key" not in hpa_spec["metrics"]


@needs_kubectl
@pytest.mark.parametrize("variant", [*VARIANTS, "merge_example"])
def test_the_renderer_agrees_with_kubectl(variant, tmp_path):
    directory = merge_example(tmp_path) if variant == "merge_example" else K8S / variant
    assert by_id(kustomize(directory)) == by_id(kubectl_kustomize(directory))


def test_the_base_renders_as_its_files():
    files = [doc for name, docs in plain_manifests().items() if name.startswith("base/") for doc in docs]
    assert by_id(kustomize(K8S / "base")) == by_id(files)


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


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_renders_and_passes_the_schema(variant):
    resources = kustomize(K8S / variant)
    assert sorted(kind for _, kind, _, _ in by_id(resources)) == [
        "ConfigMap",
        "Deployment",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Service",
        "Service",
    ]
    for version in VERSIONS:
        for resource in resources:
            kubernetes_validate.validate(resource, version, strict=True)


def test_a_mistyped_field_in_an_overlay_patch_fails_the_schema(tmp_path):
    """The merge does not know field names, so a typo in a patch renders; the schema check must catch it."""
    patch = {**DEPLOYMENT_PATCH, "metadata": {"name": "asr-server"}}
    container = {"name": "asr-server", "resources": {"limit": {"nvidia.com/gpu": 1}}}  # `limits`
    patch["spec"] = {"template": {"spec": {"containers": [container]}}}
    base = os.path.relpath(K8S / "base", tmp_path)
    write_tree(
        tmp_path, {"kustomization.yaml": {"resources": [base], "patches": [{"path": "p.yaml"}]}, "p.yaml": patch}
    )
    deployment = by_kind(kustomize(tmp_path))["Deployment"]
    assert deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["limit"] == {"nvidia.com/gpu": 1}
    with pytest.raises(kubernetes_validate.ValidationError, match="limit"):
        kubernetes_validate.validate(deployment, VERSIONS[-1], strict=True)


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


def test_the_gpu_overlay_runs_the_model_on_a_gpu_node():
    resources = render("overlays/gpu")
    cfg, container = server_config(resources)
    assert cfg.device == "cuda"
    assert int(container["resources"]["limits"]["nvidia.com/gpu"]) == 1
    pod = resources["Deployment"]["spec"]["template"]["spec"]
    assert pod["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    assert container["image"].endswith(":cuda")
    assert {e["name"] for e in container["env"]} >= {"ASR_SERVER_DEVICE", "NUMBA_CACHE_DIR"}  # merged, not replaced


def test_the_active_streams_overlay_scales_on_the_servers_gauge():
    from server.metrics import ServerMetrics

    (metric,) = render("overlays/active-streams")["HorizontalPodAutoscaler"]["spec"]["metrics"]
    exported = {m.name for m in ServerMetrics().registry.collect()}
    assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] in exported
