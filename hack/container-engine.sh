#!/usr/bin/env bash
# A Docker engine to build and run Distillery's images; prints the DOCKER_HOST to use.
#
#   export DOCKER_HOST="$(hack/container-engine.sh)"
#   hack/container-engine.sh --stop      stop the engine this script started (if any)
#
# In order, it uses:
#   1. the engine the docker client reaches as configured ($DOCKER_HOST, the current docker
#      context, or /var/run/docker.sock), when it answers: a normal dev machine;
#   2. an engine this script started before (its socket under ENGINE_DIR);
#   3. otherwise, as root, it installs Debian's docker.io (apt-get) when dockerd is missing
#      and starts dockerd in the background with its own data root, exec root and socket
#      under ENGINE_DIR, detached so the caller can exit. No systemd needed (CI machines).
#
# Settings (environment): DISTILLERY_ENGINE_DIR (default /var/lib/distillery-docker),
# ENGINE_START_TIMEOUT (seconds to wait for `docker info`, default 120).
# Messages go to stderr; stdout carries only the DOCKER_HOST value.
set -euo pipefail

ENGINE_DIR=${DISTILLERY_ENGINE_DIR:-/var/lib/distillery-docker}
ENGINE_START_TIMEOUT=${ENGINE_START_TIMEOUT:-120}
SOCKET=$ENGINE_DIR/docker.sock
PIDFILE=$ENGINE_DIR/dockerd.pid
LOG=$ENGINE_DIR/dockerd.log
OWN_HOST=unix://$SOCKET

log() { printf 'container-engine: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

answers() { # [HOST]: does an engine answer there (default: where the client is configured to go)?
  if [ $# = 1 ]; then
    DOCKER_HOST=$1 timeout 20 docker info >/dev/null 2>&1
  else
    timeout 20 docker info >/dev/null 2>&1
  fi
}

configured_host() { # where the docker client goes when DOCKER_HOST is not given
  docker context inspect --format '{{.Endpoints.docker.Host}}' 2>/dev/null || echo unix:///var/run/docker.sock
}

alive() { # PID NAME: is PID a running NAME? (A zombie, or a pid reused by another program, is not.)
  local pid=$1 name=$2
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] || return 1
  # Field 3 of /proc/PID/stat is the state; Z: exited, not yet reaped by its parent.
  [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]
}

own_pid() { # the pid of the dockerd this script started, if it still runs
  local pid
  [ -f "$PIDFILE" ] || return 1
  pid=$(cat "$PIDFILE")
  [ -n "$pid" ] && alive "$pid" dockerd && echo "$pid"
}

# Pid files left by a dockerd (and its containerd) that died: dockerd refuses to start over its
# own, and waits in vain for a containerd whose pid file names a dead (or zombie) process.
remove_stale_pidfiles() {
  local file name pid
  for file in "$PIDFILE:dockerd" "$ENGINE_DIR/exec/containerd/containerd.pid:containerd"; do
    name=${file##*:}
    file=${file%:*}
    [ -f "$file" ] || continue
    pid=$(cat "$file")
    if [ -z "$pid" ] || ! alive "$pid" "$name"; then
      log "removing the stale $name pid file $file"
      rm -f "$file"
    fi
  done
}

stop_own() {
  local pid
  if pid=$(own_pid); then
    log "stopping dockerd (pid $pid)"
    kill "$pid"
    # dockerd stops its containers and its containerd first; give it the time that takes.
    for _ in $(seq 60); do alive "$pid" dockerd || { log "stopped"; return 0; }; sleep 1; done
    die "dockerd (pid $pid) still runs after 60 s; see $LOG"
  fi
  log "no engine started by this script is running"
}

install_docker() {
  command -v apt-get >/dev/null || die "dockerd is not installed and there is no apt-get to install it; install Docker"
  log "installing Debian's docker.io (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends docker.io >&2
}

start_own() {
  [ "$(id -u)" = 0 ] || die "no Docker engine answers and starting one needs root (run as root, or start Docker and set DOCKER_HOST)"
  command -v dockerd >/dev/null || install_docker
  command -v docker >/dev/null || die "the docker client is missing (package docker.io)"
  mkdir -p "$ENGINE_DIR/data" "$ENGINE_DIR/exec"
  if ! own_pid >/dev/null; then
    remove_stale_pidfiles
    log "starting dockerd (data under $ENGINE_DIR, log $LOG)"
    # setsid: its own session, so neither the caller's exit nor a signal to the caller's
    # process group stops it; no stdin, output to the log, nothing tied to the caller's terminal.
    setsid dockerd \
      --data-root "$ENGINE_DIR/data" \
      --exec-root "$ENGINE_DIR/exec" \
      --pidfile "$PIDFILE" \
      -H "$OWN_HOST" \
      </dev/null >>"$LOG" 2>&1 &
    disown
  else
    log "dockerd (pid $(own_pid)) is starting; waiting for it"
  fi
  local deadline=$((SECONDS + ENGINE_START_TIMEOUT))
  until answers "$OWN_HOST"; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      tail -n 30 "$LOG" >&2 || true
      die "dockerd did not answer on $SOCKET within ${ENGINE_START_TIMEOUT}s (log above: $LOG)"
    fi
    # dockerd exits at once on a bad flag or a busy bridge: say so instead of waiting it out.
    if ! own_pid >/dev/null && [ $((SECONDS + ENGINE_START_TIMEOUT - deadline)) -gt 10 ]; then
      tail -n 30 "$LOG" >&2 || true
      die "dockerd exited while starting (log above: $LOG)"
    fi
    sleep 1
  done
  log "dockerd answers on $SOCKET"
}

main() {
  if [ "${1:-}" = "--stop" ]; then
    stop_own
    return 0
  fi
  [ $# = 0 ] || die "unknown argument: $1 (usage: $0 [--stop])"
  command -v docker >/dev/null || [ "$(id -u)" = 0 ] ||
    die "docker is not installed (install Docker, or run this script as root to install Debian's docker.io)"
  local host
  if command -v docker >/dev/null && answers; then
    host=${DOCKER_HOST:-$(configured_host)}
  elif command -v docker >/dev/null && answers "$OWN_HOST"; then
    host=$OWN_HOST
  else
    start_own
    host=$OWN_HOST
  fi
  log "using the engine at $host ($(DOCKER_HOST=$host docker version --format 'server {{.Server.Version}}' 2>/dev/null))"
  printf '%s\n' "$host"
}

main "$@"
