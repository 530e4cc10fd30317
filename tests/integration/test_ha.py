"""High availability as the chart sets it up: two replicas, one reconciles, the other takes over.

The operator Deployment is what `helm template` renders with `operator.leaderElection.enabled`
and `operator.replicas: 2`, nothing else changed but the image name. The harness (tests/harness,
process runtime) runs both replicas as the kubelet would: the chart's exact command and args
(its `--metrics-port=8080` gets a free port per pod, as pods have their own network), the
downward-API env, the probes. They log in to the emulator with a kubeconfig, as outside a
cluster. The Lease lives in the emulator, which refuses a stale replace as an API server does.
"""

from __future__ import annotations

import pytest

from tests.support.ha_scenario import two_chart_replicas_one_reconciles_the_other_takes_over

pytestmark = pytest.mark.integration


def test_two_chart_replicas_one_reconciles_the_other_takes_over(tmp_path):
    two_chart_replicas_one_reconciles_the_other_takes_over(tmp_path)
