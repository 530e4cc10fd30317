#!/usr/bin/env bash
# End to end on a real (kind) cluster: examples/tiny.yaml through the operator installed
# by the Helm chart, with the CPU worker image serving the tiny teacher.
#
#   hack/kind-e2e.sh            create (or reuse) the cluster, run the job, keep the cluster
#   KEEP_CLUSTER=0 hack/kind-e2e.sh   ... and delete the cluster at the end
#
# Needs: docker (with access to a registry for the base images), kind, kubectl, helm.
# It cannot run on the machines this project is developed on (no kind node image can be
# pulled there); tests/e2e/test_operator_e2e.py is the e2e that runs there instead.
#
# Settings (environment): CLUSTER (kind cluster name), NAMESPACE (of the job),
# TIMEOUT (seconds to wait for Succeeded), TAG (of the images built here),
# BUILD_ARGS (extra `docker build` arguments, e.g. "--build-arg TORCH_INDEX_URL=...").
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER=${CLUSTER:-distillery-e2e}
NAMESPACE=${NAMESPACE:-distillery-e2e}
RELEASE_NAMESPACE=${RELEASE_NAMESPACE:-distillery-system}
TIMEOUT=${TIMEOUT:-1800}
TAG=${TAG:-e2e}
KEEP_CLUSTER=${KEEP_CLUSTER:-1}
BUILD_ARGS=${BUILD_ARGS:-}
OPERATOR_IMAGE=distillery/operator:$TAG
WORKER_IMAGE=distillery/worker-cpu:$TAG
JOB=tiny
CLAIM=tiny-data
KUBECTL=(kubectl --context "kind-$CLUSTER")

log() { printf '%s kind-e2e: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }

# What a person needs to see when a step fails: the job, its children and their logs.
diagnostics() {
  log "diagnostics"
  "${KUBECTL[@]}" -n "$NAMESPACE" get dj,deploy,svc,jobs,pods,pvc -o wide || true
  "${KUBECTL[@]}" -n "$NAMESPACE" describe dj "$JOB" || true
  "${KUBECTL[@]}" -n "$NAMESPACE" get events --sort-by=.lastTimestamp | tail -n 40 || true
  "${KUBECTL[@]}" -n "$RELEASE_NAMESPACE" logs deploy/distillery --tail=100 || true
  local pod
  for pod in $("${KUBECTL[@]}" -n "$NAMESPACE" get pods -o name 2>/dev/null); do
    echo "--- $pod"
    "${KUBECTL[@]}" -n "$NAMESPACE" logs "$pod" --all-containers --tail=40 || true
  done
}

cleanup() {
  local rc=$?
  if [ "$rc" != 0 ]; then diagnostics; fi
  if [ "$KEEP_CLUSTER" = 0 ]; then
    log "deleting cluster $CLUSTER"
    kind delete cluster --name "$CLUSTER" || true
  else
    log "cluster kept: kubectl --context kind-$CLUSTER -n $NAMESPACE get dj (KEEP_CLUSTER=0 deletes it)"
  fi
  exit "$rc"
}

# 1. Tools. Each is needed for real; say which one is missing instead of failing later.
for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || die "$tool not found on PATH (this script needs docker, kind, kubectl and helm)"
done
docker info >/dev/null 2>&1 || die "docker is installed but its daemon is not reachable"

# 2. The cluster: one kind node is enough for the tiny job (2 shards, CPU only).
if kind get clusters | grep -qx "$CLUSTER"; then
  log "reusing kind cluster $CLUSTER"
else
  log "creating kind cluster $CLUSTER"
  kind create cluster --name "$CLUSTER" --wait 180s
fi
trap cleanup EXIT

# 3. Images: the operator and the CPU worker (stages + the CPU vLLM teacher), built from
# this checkout and loaded into the node, so nothing is pushed anywhere.
log "building $OPERATOR_IMAGE and $WORKER_IMAGE"
# The real bases (kind needs a registry anyway); BUILD_ARGS is passed on to `docker build`.
BASE=registry OPERATOR_IMAGE=$OPERATOR_IMAGE WORKER_CPU_IMAGE=$WORKER_IMAGE BUILD_ARGS=$BUILD_ARGS \
  hack/build-images.sh operator worker-cpu
log "loading the images into the kind node"
kind load docker-image --name "$CLUSTER" "$OPERATOR_IMAGE" "$WORKER_IMAGE"

# 4. The operator, from the chart (CRDs included), using the images just loaded.
log "installing the chart"
helm upgrade --install distillery charts/distillery \
  --kube-context "kind-$CLUSTER" \
  --namespace "$RELEASE_NAMESPACE" --create-namespace \
  --set operator.image.repository="${OPERATOR_IMAGE%:*}" --set operator.image.tag="$TAG" \
  --set workers.image.repository="${WORKER_IMAGE%:*}" --set workers.image.tag="$TAG" \
  --wait --timeout 5m
"${KUBECTL[@]}" wait --for condition=Established crd/distillationjobs.distillery.dev --timeout 60s

# 5. Storage with the tiny models and data on it. kind's default StorageClass
# (local-path) gives ReadWriteOnce volumes; on one node every pod can mount it.
log "preparing the tiny models and data on PVC $CLAIM"
"${KUBECTL[@]}" create namespace "$NAMESPACE" --dry-run=client -o yaml | "${KUBECTL[@]}" apply -f -
"${KUBECTL[@]}" -n "$NAMESPACE" apply -f - <<EOF
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: $CLAIM}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 2Gi}}
EOF
# The scripts are not in the images (.dockerignore lets only the package in); a ConfigMap
# carries them into a one-off Job that runs them with the worker image's Python.
"${KUBECTL[@]}" -n "$NAMESPACE" create configmap prepare-tiny \
  --from-file=hack/prepare_tiny.py --from-file=hack/make_tiny_models.py \
  --dry-run=client -o yaml | "${KUBECTL[@]}" apply -f -
"${KUBECTL[@]}" -n "$NAMESPACE" delete job prepare-tiny --ignore-not-found
"${KUBECTL[@]}" -n "$NAMESPACE" apply -f - <<EOF
apiVersion: batch/v1
kind: Job
metadata: {name: prepare-tiny}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      # The stage pods run as uid 65532 (the worker images' user, fsGroup 65532); files
      # made here must be theirs.
      securityContext: {runAsUser: 65532, runAsGroup: 65532, fsGroup: 65532}
      containers:
        - name: prepare
          image: $WORKER_IMAGE
          imagePullPolicy: IfNotPresent
          command: [python, /scripts/prepare_tiny.py, --out, /data]
          env: [{name: HOME, value: /tmp}]
          volumeMounts:
            - {name: storage, mountPath: /data}
            - {name: scripts, mountPath: /scripts}
      volumes:
        - {name: storage, persistentVolumeClaim: {claimName: $CLAIM}}
        - {name: scripts, configMap: {name: prepare-tiny}}
EOF
"${KUBECTL[@]}" -n "$NAMESPACE" wait --for condition=Complete job/prepare-tiny --timeout 600s \
  || die "preparing the tiny models failed"

# 6. The job: examples/tiny.yaml as is, except what a cluster needs that a laptop does
# not: the storage claim made above, and the CPU worker image for the teacher (the
# default teacher image is vLLM's CUDA build). Kustomize (built into kubectl) applies
# that patch, so the example file itself is what gets tested.
work=$(mktemp -d)
cp examples/tiny.yaml "$work/tiny.yaml"
cat >"$work/kustomization.yaml" <<EOF
namespace: $NAMESPACE
resources: [tiny.yaml]
patches:
  - target: {kind: DistillationJob, name: $JOB}
    patch: |-
      apiVersion: distillery.dev/v1alpha1
      kind: DistillationJob
      metadata: {name: $JOB}
      spec:
        teacher: {image: $WORKER_IMAGE}
        storage: {pvc: {claimName: $CLAIM}}
EOF
log "applying examples/tiny.yaml (patched: storage.pvc.claimName=$CLAIM, teacher.image=$WORKER_IMAGE)"
"${KUBECTL[@]}" delete dj "$JOB" -n "$NAMESPACE" --ignore-not-found --wait
"${KUBECTL[@]}" kustomize "$work" | "${KUBECTL[@]}" apply -f -
rm -rf "$work"

# 7. Wait for Succeeded, printing `kubectl get dj` whenever it changes (and once a minute).
deadline=$((SECONDS + TIMEOUT))
last="" last_print=0
while :; do
  line=$("${KUBECTL[@]}" -n "$NAMESPACE" get dj "$JOB" --no-headers 2>&1 || true)
  if [ "$line" != "$last" ] || [ $((SECONDS - last_print)) -ge 60 ]; then
    "${KUBECTL[@]}" -n "$NAMESPACE" get dj "$JOB" || true
    last=$line last_print=$SECONDS
  fi
  phase=$("${KUBECTL[@]}" -n "$NAMESPACE" get dj "$JOB" -o jsonpath='{.status.phase}' 2>/dev/null || true)
  case "$phase" in
    Succeeded) break ;;
    Failed) die "the DistillationJob failed: $("${KUBECTL[@]}" -n "$NAMESPACE" get dj "$JOB" -o jsonpath='{.status.message}')" ;;
  esac
  [ "$SECONDS" -lt "$deadline" ] || die "the DistillationJob did not succeed within ${TIMEOUT}s (phase: ${phase:-none})"
  sleep 10
done

# 8. What it produced: the evaluation summary in the status and the report's path.
log "Succeeded"
"${KUBECTL[@]}" -n "$NAMESPACE" get dj "$JOB" -o jsonpath='{.status.evaluation}{"\n"}{.status.artifacts}{"\n"}'
if [ -n "$("${KUBECTL[@]}" -n "$NAMESPACE" get deploy -l distillery.dev/job="$JOB",distillery.dev/stage=teacher -o name)" ]; then
  replicas=$("${KUBECTL[@]}" -n "$NAMESPACE" get deploy -l distillery.dev/job="$JOB",distillery.dev/stage=teacher \
    -o jsonpath='{.items[0].spec.replicas}')
  [ "$replicas" = 0 ] || die "the teacher still runs ($replicas replicas) after generation"
fi
log "the teacher is gone; done"
