#!/usr/bin/env bash
# The test command (README and CI run exactly this): installs what the tests need,
# then runs every tier: unit, integration, stages (real vLLM on CPU, real training), e2e.
# Extra arguments go to pytest, e.g. `hack/test.sh -m unit`.
set -euo pipefail
cd "$(dirname "$0")/.."

hack/env.sh
if [ -x hack/install-tools.sh ]; then
  hack/install-tools.sh  # helm and prometheus/promtool for the chart and metrics tests
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
