"""Progress while a stage runs, in status and `kubectl get dj`, without API reads per tick.

The "training pod" here is what the cluster would show: a Pod object of the train Job, Running,
with a podIP, and at that IP on port 9090 the training process's own registry
(`distillery.training.metrics`), served by prometheus_client as the train stage serves it.
"""

from __future__ import annotations

import pytest
from prometheus_client import start_http_server

from distillery.contract.commands import METRICS_PORT
from distillery.training import metrics
from tests.support.kmock_cluster import Cluster, spec
from tests.support.waiting import wait_for_async

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

POD_IP = "127.0.3.7"  # a loopback address of its own, as a pod has an IP of its own


async def test_training_progress_reaches_status_within_seconds_without_api_reads(cluster: Cluster):
    server, thread = start_http_server(METRICS_PORT, addr=POD_IP, registry=metrics.REGISTRY)
    try:
        metrics.TRAIN_STEP.set(12)
        metrics.TRAIN_EPOCH.set(0.5)
        metrics.TRAIN_LOSS.set(1.25)
        endpoint = {"endpoint": {"url": "http://llm:8000/v1", "model": "m"}}
        async with cluster.operator():
            await cluster.create_job("live", spec(teacher=endpoint))
            await cluster.inputs_ready("live")
            gen = await cluster.wait_child("batch/v1/jobs", "live-generate")
            await cluster.job_done("live-generate", succeeded=2)
            train = await cluster.wait_child("batch/v1/jobs", "live-train")
            labels = train["spec"]["template"]["metadata"]["labels"]
            await cluster.create(
                "v1/pods",
                {
                    "metadata": {"name": "live-train-abcde", "labels": labels},
                    "spec": train["spec"]["template"]["spec"],
                    "status": {"phase": "Running", "podIP": POD_IP},
                },
            )
            status = await wait_for_async(lambda: _progress(cluster, "epoch", 0.5), "the epoch in status", 20)
            assert status["progress"]["summary"] == "train epoch 0.50/3, loss 1.25"
            assert status["progress"]["step"] == 12
            before = len(cluster.operator_requests())
            metrics.TRAIN_EPOCH.set(2.25)
            metrics.TRAIN_LOSS.set(0.5)
            status = await wait_for_async(lambda: _progress(cluster, "epoch", 2.25), "the new epoch", 10)
            assert status["progress"]["summary"] == "train epoch 2.25/3, loss 0.5"
            reads = [
                r
                for r in cluster.operator_requests()[before:]
                if r.method.value.upper() == "GET" and r.params.get("watch") not in ("true", "1")
            ]
            assert reads == [], "progress came from the pod's /metrics, not from reading the API"
            assert gen["metadata"]["name"] == "live-generate"
    finally:
        server.shutdown()
        thread.join()


async def _progress(cluster: Cluster, field: str, value: float) -> dict | None:
    status = await cluster.job_status("live")
    return status if (status.get("progress") or {}).get(field) == value else None
