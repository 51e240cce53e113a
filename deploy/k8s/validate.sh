#!/usr/bin/env bash
# Validate every manifest offline against Kubernetes' own schemas (kubernetes-validate bundles them):
# the base and each overlay as kustomize renders them, and the Secret example. No cluster needed.
#   deploy/k8s/validate.sh [KUBERNETES_VERSION ...]   (default: 1.27.0, the first with gRPC probes GA, and 1.37.0)
set -euo pipefail
cd "$(dirname "$0")"
VALIDATE=${VALIDATE:-../../.venv/bin/kubernetes-validate}
VERSIONS=("${@:-1.27.0}")
[ $# -gt 0 ] || VERSIONS+=(1.37.0)
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
for variant in base overlays/gpu overlays/active-streams; do
    kubectl kustomize "$variant" > "$OUT/$(basename "$variant").yaml"
done
cp secret.example.yaml "$OUT/"
for version in "${VERSIONS[@]}"; do
    "$VALIDATE" --strict -k "$version" "$OUT"/*.yaml
done
