#!/usr/bin/env bash
# An OCI registry on the loopback (the distribution registry, Debian's `docker-registry`), for the
# release test: prints its address (127.0.0.1:PORT). Docker and helm push to loopback registries
# over plain HTTP without extra configuration.
#
#   REGISTRY=$(hack/registry.sh)          start one (installs docker-registry with apt-get as root when missing)
#   hack/registry.sh --stop                stop the one this script started
#
# Settings (environment): DISTILLERY_REGISTRY_DIR (default /var/lib/distillery-registry: storage, config,
# pid and log), DISTILLERY_REGISTRY_PORT (default 5055).
set -euo pipefail

DIR=${DISTILLERY_REGISTRY_DIR:-/var/lib/distillery-registry}
PORT=${DISTILLERY_REGISTRY_PORT:-5055}
ADDRESS=127.0.0.1:$PORT
log() { printf 'registry: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
answers() { curl -fsS -o /dev/null "http://$ADDRESS/v2/" 2>/dev/null; }

if [ "${1:-}" = --stop ]; then
  [ -f "$DIR/registry.pid" ] && kill "$(cat "$DIR/registry.pid")" 2>/dev/null || true
  rm -f "$DIR/registry.pid"
  exit 0
fi
if answers; then
  echo "$ADDRESS"
  exit 0
fi
if ! command -v docker-registry >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || die "docker-registry is not installed and this is not root: apt-get install docker-registry"
  log "installing Debian's docker-registry"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker-registry >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker-registry >/dev/null; }
fi
mkdir -p "$DIR/storage"
cat >"$DIR/config.yml" <<CONFIG
version: 0.1
log: {level: warn}
storage: {filesystem: {rootdirectory: $DIR/storage}, delete: {enabled: true}}
http: {addr: $ADDRESS}
CONFIG
setsid docker-registry serve "$DIR/config.yml" >"$DIR/registry.log" 2>&1 </dev/null &
echo $! >"$DIR/registry.pid"
for _ in $(seq 1 100); do
  if answers; then
    log "serving on $ADDRESS (storage $DIR/storage)"
    echo "$ADDRESS"
    exit 0
  fi
  sleep 0.1
done
tail -n 20 "$DIR/registry.log" >&2
die "the registry did not answer on $ADDRESS"
