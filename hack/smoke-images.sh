#!/usr/bin/env bash
# Runs the built images the way Kubernetes runs them, and fails when they do not work there.
#
#   hack/build-images.sh && hack/smoke-images.sh
#   SMOKE_STAGES="teacher generate" hack/smoke-images.sh      only serve and generate
#
# Every container runs as uid/gid 65532 with a read-only root filesystem, all capabilities
# dropped and no-new-privileges, with only what the pod mounts:
#   1. operator image: `distillery operator --help`, `distillery --version`.
#   2. worker image: `distillery --help`; `import torch, transformers, vllm`.
#   3. the tiny models and prompts (hack/prepare_tiny.py, run in the worker image) on a
#      directory that stands for the job's volume (group 65532, as fsGroup makes it);
#   4. the pods the operator builds for examples/tiny.yaml, from its own manifest builders
#      (hack/smoke_pods.py): the vLLM teacher (its /health, a chat completion), the generation
#      shards against it through its Service name, then training and evaluation. Each pod's
#      summary (its termination message) is printed, and what it wrote outside the volume.
# The manifests give every pod a read-only root and an emptyDir at /tmp (the worker needs a
# writable /tmp, images/worker-cpu.Dockerfile); smoke_pods.py adds them, with a note, if one lacks them.
#
# Settings (environment): OPERATOR_IMAGE, WORKER_CPU_IMAGE (as hack/build-images.sh),
# SMOKE_STAGES (default "teacher generate train evaluate"), SMOKE_DIR (build/smoke),
# SMOKE_JOB (examples/tiny.yaml), TEACHER_TIMEOUT (s, 600), STAGE_TIMEOUT (s, 900),
# VLLM_CPU_KVCACHE_SPACE (GiB for each vLLM server, 1). Needs docker and python3 on the host.
set -euo pipefail
cd "$(dirname "$0")/.."

OPERATOR_IMAGE=${OPERATOR_IMAGE:-distillery-operator:dev}
WORKER_CPU_IMAGE=${WORKER_CPU_IMAGE:-distillery-worker-cpu:dev}
SMOKE_STAGES=${SMOKE_STAGES:-teacher generate train evaluate}
SMOKE_DIR=$(mkdir -p "${SMOKE_DIR:-build/smoke}" && cd "${SMOKE_DIR:-build/smoke}" && pwd)
SMOKE_JOB=${SMOKE_JOB:-examples/tiny.yaml}
TEACHER_TIMEOUT=${TEACHER_TIMEOUT:-600}
STAGE_TIMEOUT=${STAGE_TIMEOUT:-900}
VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-1}
NETWORK=distillery-smoke
LABEL=distillery.smoke=1
DATA=$SMOKE_DIR/data
PODS=$SMOKE_DIR/pods
LOGS=$SMOKE_DIR/logs
# How Kubernetes runs the pods: the manifests' user, read-only root, no capabilities.
RESTRICTED=(--user 65532:65532 --read-only --cap-drop ALL --security-opt no-new-privileges)
# A pod's emptyDir at /tmp, as the kubelet mounts it (writable, exec allowed).
# shellcheck disable=SC2054  # the commas are tmpfs mount options
TMP_VOLUME=(--tmpfs /tmp:rw,exec,mode=1777)

log() { printf '%s smoke: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }
pass() { log "ok: $*"; }

cleanup() {
  local ids
  ids=$(docker ps -aq --filter "label=$LABEL")
  if [ -n "$ids" ]; then
    # shellcheck disable=SC2086  # one word per container id
    docker rm -f $ids >/dev/null || true
  fi
  docker network rm "$NETWORK" >/dev/null 2>&1 || true
}

has_stage() { [[ " $SMOKE_STAGES " == *" $1 "* ]]; }

# A stage's termination message (its JSON summary) must parse and have KEY >= MIN.
check_summary() { # NAME FILE KEY MIN
  local name=$1 file=$2 key=$3 min=$4
  [ -s "$file" ] || die "$name wrote no termination message ($file)"
  python3 - "$file" "$key" "$min" <<'EOF' || die "$name: unexpected summary: $(cat "$file")"
import json, sys
summary = json.load(open(sys.argv[1]))
value = summary
for part in sys.argv[2].split("."):
    value = value[part]
sys.exit(0 if float(value) >= float(sys.argv[3]) else 1)
EOF
  log "$name summary: $(head -c 600 "$file")"
}

# The docker run arguments of one pod of the job, from the operator's manifest builders.
# (Run as root, not as a pod: it writes the emptyDirs and termination-log files a kubelet would.)
pod_args() { # CHILD [smoke_pods.py OPTION...]
  local child=$1
  shift
  docker run --rm --network none --user 0:0 \
    -v "$SMOKE_DIR:$SMOKE_DIR" -v "$PWD/hack:/hack:ro" -v "$PWD/$SMOKE_JOB:/job.yaml:ro" \
    --entrypoint python "$WORKER_CPU_IMAGE" /hack/smoke_pods.py /job.yaml "$child" \
    --worker-image "$WORKER_CPU_IMAGE" --pvc-dir "$DATA" --scratch "$PODS" --add-tmp --read-only "$@"
}

# Runs one pod's container in the background; NAME is also its log's name.
start_pod() { # NAME CHILD [INDEX]
  local name=$1 args=()
  mapfile -d '' args < <(pod_args "$2" --index "${3:-0}")
  [ ${#args[@]} -gt 0 ] || die "no pod arguments for $2"
  docker run -d --name "smoke-$name" --label "$LABEL" --network "$NETWORK" \
    -e "VLLM_CPU_KVCACHE_SPACE=$VLLM_CPU_KVCACHE_SPACE" "${args[@]}" >/dev/null
}

# Waits for a pod's container to exit 0 within STAGE_TIMEOUT; keeps its log.
wait_pod() { # NAME
  local name=$1 code
  code=$(timeout "$STAGE_TIMEOUT" docker wait "smoke-$name") || code=timeout
  docker logs "smoke-$name" >"$LOGS/$name.log" 2>&1 || true
  if [ "$code" != 0 ]; then
    tail -n 40 "$LOGS/$name.log" >&2
    die "$name exited with $code (log above: $LOGS/$name.log)"
  fi
}

# What a pod wrote outside the job's volume: the emptyDir at /tmp.
show_tmp() { # POD-NAME
  local dir=$PODS/$1-tmp
  [ -d "$dir" ] || return 0
  log "$1 wrote $(du -sh "$dir" | cut -f1) to /tmp: $(cd "$dir" && find . -mindepth 1 -maxdepth 2 \
    | sed -E 's/[0-9a-f]{8}-[0-9a-f-]{27}/<uuid>/; s/_[0-9a-f]{32}$/_<hex>/' | sort -u | tr '\n' ' ')"
}

check_operator() {
  local user
  user=$(docker image inspect -f '{{.Config.User}}' "$OPERATOR_IMAGE")
  [ "$user" = 65532:65532 ] || die "$OPERATOR_IMAGE runs as '$user', not 65532:65532"
  docker run --rm --network none "${RESTRICTED[@]}" "$OPERATOR_IMAGE" --help | grep -q "usage: distillery operator" ||
    die "$OPERATOR_IMAGE: distillery operator --help"
  docker run --rm --network none "${RESTRICTED[@]}" --entrypoint distillery "$OPERATOR_IMAGE" --version | grep -q "^distillery " ||
    die "$OPERATOR_IMAGE: distillery --version"
  pass "operator image: operator --help and --version, read-only as 65532"
}

check_worker() {
  local user
  user=$(docker image inspect -f '{{.Config.User}}' "$WORKER_CPU_IMAGE")
  [ "$user" = 65532:65532 ] || die "$WORKER_CPU_IMAGE runs as '$user', not 65532:65532"
  docker run --rm --network none "${RESTRICTED[@]}" "$WORKER_CPU_IMAGE" --help | grep -q "generate" ||
    die "$WORKER_CPU_IMAGE: distillery --help"
  docker run --rm --network none "${RESTRICTED[@]}" "${TMP_VOLUME[@]}" --entrypoint python "$WORKER_CPU_IMAGE" \
    -c 'import torch, transformers, vllm; print(torch.__version__, transformers.__version__, vllm.__version__)' ||
    die "$WORKER_CPU_IMAGE: import torch, transformers, vllm"
  pass "worker image: distillery --help and the imports, read-only as 65532"
}

prepare_data() {
  # Through a container as root: what earlier pods left is owned by 65532, and the volume is
  # made as fsGroup makes a claim (group 65532, setgid), whoever runs this script.
  mkdir -p "$DATA" "$PODS" "$LOGS"
  docker run --rm --network none --user 0:0 -v "$SMOKE_DIR:/smoke" --entrypoint sh "$WORKER_CPU_IMAGE" -c '
    rm -rf /smoke/data/jobs /smoke/data/.cache /smoke/pods/* /smoke/logs/*
    chgrp 65532 /smoke/data && chmod 2775 /smoke/data && chmod 0777 /smoke/pods /smoke/logs' ||
    die "could not reset $SMOKE_DIR"
  # A fresh job each time; the models are kept (prepare_tiny.py remakes them only when absent).
  log "tiny models and prompts into $DATA (hack/prepare_tiny.py in the worker image; about a minute the first time)"
  docker run --rm --network none "${RESTRICTED[@]}" "${TMP_VOLUME[@]}" \
    -v "$DATA:/data" -v "$PWD/hack:/hack:ro" -w /data -e HOME=/tmp \
    --entrypoint python "$WORKER_CPU_IMAGE" /hack/prepare_tiny.py --out /data >"$LOGS/prepare.log" 2>&1 ||
    { tail -n 30 "$LOGS/prepare.log" >&2; die "prepare_tiny.py in the worker image"; }
  pass "tiny models and prompts made in the worker image as 65532"
}

# An HTTP request from inside the teacher's container (as the kubelet's probe reaches the pod):
# no curl and no route to container addresses needed on the host (Docker Desktop has none).
teacher_http() { # PATH [JSON-BODY]: prints the response body
  docker exec smoke-teacher python3 -c '
import sys, urllib.request
body = sys.argv[2].encode() if len(sys.argv) > 2 else None
request = urllib.request.Request("http://127.0.0.1:8000" + sys.argv[1], body, {"content-type": "application/json"})
print(urllib.request.urlopen(request, timeout=60).read().decode())' "$@"
}

run_teacher() {
  local started=$SECONDS reply answer
  start_pod teacher teacher
  log "teacher: waiting for vLLM's /health (torch.compile on; a minute or two on 2 cores)"
  until teacher_http /health >/dev/null 2>&1; do
    if [ "$(docker inspect -f '{{.State.Running}}' smoke-teacher)" != true ]; then
      docker logs smoke-teacher >"$LOGS/teacher.log" 2>&1 || true
      tail -n 40 "$LOGS/teacher.log" >&2
      die "the teacher exited before it was healthy (log: $LOGS/teacher.log)"
    fi
    [ $((SECONDS - started)) -lt "$TEACHER_TIMEOUT" ] || die "the teacher was not healthy after ${TEACHER_TIMEOUT}s"
    sleep 2
  done
  pass "teacher healthy after $((SECONDS - started))s"
  reply=$(teacher_http /v1/chat/completions \
    '{"model": "teacher", "messages": [{"role": "user", "content": "What is 2+3?"}], "max_tokens": 8, "temperature": 0}') ||
    die "the teacher's chat completion failed"
  answer=$(python3 -c 'import json, sys; print(json.load(sys.stdin)["choices"][0]["message"]["content"])' <<<"$reply") ||
    die "unexpected chat completion: $reply"
  pass "teacher answered a chat completion: 'What is 2+3?' -> '$answer'"
}

run_generate() {
  local shards k
  shards=$(pod_args generate --completions)
  log "generate: $shards shards against the teacher's Service"
  for k in $(seq 0 $((shards - 1))); do start_pod "generate-$k" generate "$k"; done
  for k in $(seq 0 $((shards - 1))); do
    wait_pod "generate-$k"
    check_summary "generate shard $k" "$PODS/generate-$k-termination-log" records 1
    show_tmp "generate-$k"
  done
  pass "generation: $shards shards, read-only as 65532"
}

run_stage() { # train | evaluate
  local stage=$1 started=$SECONDS
  log "$stage: running its pod"
  start_pod "$stage" "$stage"
  wait_pod "$stage"
  case $stage in
    train) check_summary train "$PODS/train-termination-log" step 1 ;;
    evaluate) check_summary evaluate "$PODS/evaluate-termination-log" retention 0 ;;
  esac
  show_tmp "$stage"
  pass "$stage in $((SECONDS - started))s, read-only as 65532"
}

main() {
  DOCKER_HOST=$(hack/container-engine.sh)
  export DOCKER_HOST
  local image
  for image in "$OPERATOR_IMAGE" "$WORKER_CPU_IMAGE"; do
    docker image inspect "$image" >/dev/null 2>&1 || die "image $image is missing: run hack/build-images.sh first"
  done
  cleanup
  trap cleanup EXIT
  docker network create "$NETWORK" >/dev/null
  check_operator
  check_worker
  [ -n "$SMOKE_STAGES" ] || return 0
  prepare_data
  if has_stage teacher; then run_teacher; fi
  if has_stage generate; then
    has_stage teacher || die "generate needs the teacher stage (SMOKE_STAGES)"
    run_generate
  fi
  if has_stage teacher; then
    docker logs smoke-teacher >"$LOGS/teacher.log" 2>&1 || true
    docker rm -f smoke-teacher >/dev/null # as the operator scales it away after generation
    show_tmp teacher
  fi
  if has_stage train; then run_stage train; fi
  if has_stage evaluate; then run_stage evaluate; fi
  log "all passed; logs in $LOGS"
}

main "$@"
