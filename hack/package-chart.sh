#!/usr/bin/env bash
# Package the Helm chart for a release: charts/distillery with version and appVersion VERSION and
# imageRegistry REGISTRY, so the packaged chart's default images are exactly the ones the release
# pushes. Prints the .tgz path. The release (hack/release.sh) and the tests call this one script.
#
#   hack/package-chart.sh VERSION REGISTRY [OUT_DIR]     e.g. hack/package-chart.sh 0.2.0 ghcr.io/distillery-dev/distillery
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=${1:?usage: hack/package-chart.sh VERSION REGISTRY [OUT_DIR]}
REGISTRY=${2:?usage: hack/package-chart.sh VERSION REGISTRY [OUT_DIR]}
OUT_DIR=${3:-build/chart}
HELM=${DISTILLERY_HELM:-$(command -v helm || echo "$HOME/.cache/distillery-tools/bin/helm")}

[[ $VERSION =~ ^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$ ]] || { echo "package-chart: VERSION $VERSION is not SemVer (e.g. 0.2.0)" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r charts/distillery "$work/distillery"
# The registry goes into the packaged values, so `helm install oci://...` pulls from where it was pushed.
sed -i "s|^imageRegistry: .*|imageRegistry: $REGISTRY|" "$work/distillery/values.yaml"
grep -q "^imageRegistry: $REGISTRY\$" "$work/distillery/values.yaml" || { echo "package-chart: could not set imageRegistry" >&2; exit 1; }
mkdir -p "$OUT_DIR"
"$HELM" lint --strict "$work/distillery" >/dev/null
"$HELM" package "$work/distillery" --version "$VERSION" --app-version "$VERSION" -d "$OUT_DIR" >/dev/null
echo "$OUT_DIR/distillery-$VERSION.tgz"
