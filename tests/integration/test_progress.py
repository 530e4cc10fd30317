"""Progress while a stage runs, in status and `kubectl get dj`, without API reads per tick.

The "training pod" here is what the cluster would show: a Pod object of the train Job, Running,
with a podIP, and at that IP on port 9090 the training process's own registry
(`distillery.training.metrics`), served by prometheus_client as the train stage serves it.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from prometheus_client import start_http_server

from distillery.contract.commands import METRICS_PORT
from distillery.contract.summaries import GenerateSummary
from distillery.training import metrics
from tests.support.kmock_cluster import DJ, Cluster, spec
from tests.support.waiting import wait_for_async

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

POD_IP = "127.0.3.7"  # a loopback address of its own, as a pod has an IP of its own


async def test_training_progress_reaches_status_within_seconds_without_api_reads(cluster: Cluster):
    server, thread = start_http_server(METRICS_PORT, addr=POD_IP, registry=metrics.REGISTRY)
    try:
        metrics.TRAIN_STEP.set(12)
        metrics.TRAIN_STEPS.set(75)
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
            assert status["progress"]["summary"].startswith("train 16% (step 12/75, epoch 0.50/3, loss 1.25")
            assert status["progress"]["step"] == 12
            before = len(cluster.operator_requests())
            metrics.TRAIN_STEP.set(56)
            metrics.TRAIN_EPOCH.set(2.25)
            metrics.TRAIN_LOSS.set(0.5)
            status = await wait_for_async(lambda: _progress(cluster, "epoch", 2.25), "the new epoch", 10)
            assert status["progress"]["summary"].startswith("train 74% (step 56/75, epoch 2.25/3, loss 0.5")
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


SHARD_IP = "127.0.3.8"  # the generation shard pod's own address


def printer_column(crd_version: dict, name: str, obj: dict):
    """What `kubectl get` shows in a column: its jsonPath (a plain `.a.b.c` path) evaluated on the object."""
    column = next(c for c in crd_version["additionalPrinterColumns"] if c["name"] == name)
    value: object = obj
    for part in column["jsonPath"].lstrip(".").split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


async def test_generation_progress_column_moves_with_the_shard_series_and_stage_events(cluster: Cluster):
    """One shard (the default): the shard pod serves the generation registry with its gauges set as the
    shard sets them; `kubectl get dj`'s PROGRESS moves as they move, and the stage's start and end are
    Normal Events with its figures."""
    from distillery.crd import build_crd
    from distillery.generation import metrics as gen_metrics

    version = build_crd()["spec"]["versions"][0]
    server, thread = start_http_server(METRICS_PORT, addr=SHARD_IP, registry=gen_metrics.REGISTRY)
    try:
        gen_metrics.GEN_PROMPTS.set(5000)
        gen_metrics.GEN_PROMPTS_DONE.set(0)
        gen_metrics.GEN_RECORDS_ACCEPTED.set(0)
        gen_metrics.GEN_OUTPUT_TOKENS_PER_SECOND.set(0)
        endpoint = {"endpoint": {"url": "http://llm:8000/v1", "model": "m"}}
        async with cluster.operator():
            await cluster.create_job("gen", spec(teacher=endpoint, generation={"shards": 1}))
            await cluster.inputs_ready("gen")
            gen = await cluster.wait_child("batch/v1/jobs", "gen-generate")
            started = datetime.now(timezone.utc) - timedelta(minutes=10)
            await cluster.patch(
                "batch/v1/jobs",
                "gen-generate",
                {"status": {"startTime": started.strftime("%Y-%m-%dT%H:%M:%SZ"), "active": 1}},
                "status",
            )
            labels = gen["spec"]["template"]["metadata"]["labels"]
            await cluster.create(
                "v1/pods",
                {
                    "metadata": {"name": "gen-generate-0-abcde", "labels": labels},
                    "spec": gen["spec"]["template"]["spec"],
                    "status": {"phase": "Running", "podIP": SHARD_IP},
                },
            )

            async def column(prefix: str):
                body = await cluster.get(DJ, "gen")
                text = printer_column(version, "Progress", body or {})
                return text if isinstance(text, str) and text.startswith(prefix) else None

            first = await wait_for_async(lambda: column("generate 0% (0/5000 prompts"), "0% in PROGRESS", 20)
            assert "ETA" not in first  # no rate yet
            gen_metrics.GEN_PROMPTS_DONE.set(1850)
            gen_metrics.GEN_RECORDS_ACCEPTED.set(1800)
            gen_metrics.GEN_OUTPUT_TOKENS_PER_SECOND.set(1234.5)
            text = await wait_for_async(lambda: column("generate 37% (1850/5000 prompts, ETA "), "37%", 20)
            assert text in (
                "generate 37% (1850/5000 prompts, ETA 17m)",
                "generate 37% (1850/5000 prompts, ETA 18m)",
            )
            progress = (await cluster.job_status("gen"))["progress"]
            assert (progress["promptsDone"], progress["promptsTotal"], progress["records"]) == (
                1850,
                5000,
                1800,
            )
            assert progress["percent"] == 37 and progress["tokensPerSecond"] == 1230
            gen_metrics.GEN_PROMPTS_DONE.set(3000)
            await wait_for_async(lambda: column("generate 60% (3000/5000 prompts, ETA "), "60%", 20)

            summary = GenerateSummary(
                prompts=5000, records=4870, output_tokens=1_234_567, rejected={"length": 130}
            )
            await cluster.finish_pod(gen, "generate", summary)
            await cluster.job_done("gen-generate")
            await cluster.wait_phase("gen", "Training")

            async def stage_events():
                events = {
                    (e.get("type"), e.get("reason"), e.get("message"))
                    for e in await cluster.list("v1/events")
                }
                return events if ("Normal", "StageCompleted", DONE) in events else None

            events = await wait_for_async(stage_events, "the generate StageCompleted Event", 20)
            assert ("Normal", "StageStarted", "generate started: 0/1 shards done") in events
            assert any(e[1] == "StageCompleted" and e[2].startswith("check done") for e in events), events
    finally:
        server.shutdown()
        thread.join()


DONE = "generate done in 10m: 5000 prompts, 4870 records, 1.23M tokens from 1 shard (130 responses rejected)"
