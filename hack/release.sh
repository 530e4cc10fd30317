#!/usr/bin/env bash
# Publish a release to one OCI registry: the images and the chart.
#
#   hack/release.sh VERSION REGISTRY            e.g. hack/release.sh 0.2.0 ghcr.io/distillery-dev/distillery
#
# 1. builds the images with hack/build-images.sh (IMAGES, default "operator worker-cpu worker-cuda"),
# 2. tags each REGISTRY/NAME:VERSION and pushes it,
# 3. packages the chart with hack/package-chart.sh (version, appVersion VERSION, imageRegistry REGISTRY)
#    and pushes it to oci://REGISTRY/charts, so `helm install oci://REGISTRY/charts/distillery --version VERSION`
#    runs exactly the images pushed in step 2.
# The release workflow (.github/workflows/release.yaml) runs this on a version tag; tests/containers/test_release.py
# runs it against a registry on the loopback. PLAIN_HTTP=1: the registry speaks HTTP (loopback tests).
# SKIP_BUILD=1: the images are already built under the names hack/build-images.sh gives them.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=${1:?usage: hack/release.sh VERSION REGISTRY}
REGISTRY=${2:?usage: hack/release.sh VERSION REGISTRY}
REGISTRY=${REGISTRY%/}
IMAGES=${IMAGES:-operator worker-cpu worker-cuda}
HELM=${DISTILLERY_HELM:-$(command -v helm || echo "$HOME/.cache/distillery-tools/bin/helm")}
log() { printf '%s release: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

DOCKER_HOST=${DOCKER_HOST:-$(hack/container-engine.sh)}
export DOCKER_HOST
# shellcheck disable=SC2086
[ "${SKIP_BUILD:-0}" = 1 ] || hack/build-images.sh $IMAGES
for name in $IMAGES; do
  local_name=$(hack/build-images.sh --name "$name")
  target="$REGISTRY/$name:$VERSION"
  docker tag "$local_name" "$target"
  log "pushing $target"
  docker push "$target" >/dev/null
done
chart=$(hack/package-chart.sh "$VERSION" "$REGISTRY")
plain=()
[ "${PLAIN_HTTP:-0}" = 1 ] && plain=(--plain-http)
log "pushing $chart to oci://$REGISTRY/charts"
"$HELM" push "$chart" "oci://$REGISTRY/charts" "${plain[@]}" >&2
log "done: helm install distillery oci://$REGISTRY/charts/distillery --version $VERSION"
