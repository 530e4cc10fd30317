#!/usr/bin/env bash
# The test command (README and CI run exactly this): installs what the tests need,
# then runs every tier: unit, integration, stages (real vLLM on CPU, real training), e2e,
# objectstore, containers (every pod a container of the images this checkout builds).
# Extra arguments go to pytest, e.g. `hack/test.sh -m unit`, `hack/test.sh -m containers`.
#
# The containers tier needs a Docker engine and the images: when it is selected (no -m, or a
# -m that names it or chaos; no paths, or a path that holds it), the engine is started first
# (hack/container-engine.sh; as root it installs Debian's docker.io with apt-get when dockerd is
# missing) and the images built (hack/build-images.sh: about 10 minutes cold on 2 cores, seconds
# when cached; it installs debootstrap to make a base where nothing can be pulled).
# DISTILLERY_CONTAINERS=1 or 0 overrides the guess. The tier's fixtures run the same two scripts,
# so a guess that missed costs only the build's time inside pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

containers_selected() {
  case ${DISTILLERY_CONTAINERS:-} in 1) return 0 ;; 0) return 1 ;; esac
  local arg previous="" marker="" paths=0 ours=0
  for arg in "$@"; do
    if [ "$previous" = -m ]; then
      marker=$arg
    elif [ "${arg#-m}" != "$arg" ] && [ "$arg" != -m ]; then
      marker=${arg#-m}
      marker=${marker#=}
    elif [ "${arg#-}" = "$arg" ] && [ -e "${arg%%::*}" ]; then
      paths=$((paths + 1))
      case $(realpath -m "${arg%%::*}")/ in
        "$PWD"/ | "$PWD"/tests/ | "$PWD"/tests/containers/*) ours=1 ;;
      esac
    fi
    previous=$arg
  done
  if [ -n "$marker" ]; then
    marker=${marker//not containers/}
    marker=${marker//not chaos/}
    [[ $marker == *containers* || $marker == *chaos* ]] || return 1  # chaos runs in the containers tier
  fi
  [ "$paths" = 0 ] || [ "$ours" = 1 ]
}

hack/env.sh
if [ -x hack/install-tools.sh ]; then
  hack/install-tools.sh  # helm and prometheus/promtool for the chart and metrics tests
fi
if containers_selected "$@"; then
  DOCKER_HOST=$(hack/container-engine.sh)
  export DOCKER_HOST
  hack/build-images.sh
fi

export PYTHONUNBUFFERED=1
# Tests start vLLM on CPU; keep its KV cache small and its threads to the 2 cores we have.
export VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-1}

set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then
  echo "test.sh: pytest collected no tests; that is a failure, not a pass" >&2
  exit 1
fi
exit "$rc"
