"""Progress while a stage runs: the operator reads the running stage pods' own /metrics.

A stage pod's Job shows only that it runs; how far training is (epoch, step, loss) and how
many models evaluation has scored are in the pod's Prometheus series. Every SCRAPE_SECONDS
the leader fetches /metrics from each running pod of a job's current stage, at the pod's IP
(from the watch-fed cache: no API reads), and queues the job's reconcile when the figures
moved; the reconcile puts them in status.progress. One HTTP request per running pod per
interval, whatever the number of jobs waiting or done.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from distillery.api import Phase, Progress
from distillery.contract import stages
from distillery.contract.commands import METRICS_PORT
from distillery.controller.cache import Cache, Key
from distillery.manifests.common import STAGE_LABEL

logger = logging.getLogger("distillery.progress")

# Every 15 s keeps status within 30 s of a pod's figures; tests set it lower.
SCRAPE_SECONDS = 15.0
SCRAPE_TIMEOUT_SECONDS = 3.0


def scraped(phase: Phase | None) -> str | None:
    """The stage whose pods report progress in this phase (one with series in the stage table), if any."""
    return next((f.stage for f in stages.STAGES if f.series and f.phase is phase), None)


def series(stage: str) -> dict[str, str]:
    """Progress field -> the series (from the stage's metrics module) it is read from."""
    return dict(stages.facts(stage).series) if stage in stages.names() else {}


def samples(text: str) -> dict[str, float]:
    """Series name -> value (summed over labels) of a Prometheus exposition."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name] = out.get(sample.name, 0.0) + sample.value
    return out


def live_progress(stage: str, scraped: Iterable[dict[str, float]]) -> dict[str, Any]:
    """The Progress fields a stage's running pods report. A sharded stage's (generation's) are summed over
    its shards, with `shards_reporting`: how many have counted their prompts. Any other stage's come from
    the first pod that has each (training's rank 0 is one)."""
    pods = list(scraped)
    sharded = stage in stages.names() and stages.facts(stage).sharded
    out: dict[str, Any] = {}
    for field, name in series(stage).items():
        values = [pod[name] for pod in pods if name in pod]
        if not values:
            continue
        value = sum(values) if sharded else values[0]
        out[field] = int(value) if field in _COUNTS else round(value, 4)
    if out and sharded and "prompts_total" in series(stage):
        name = series(stage)["prompts_total"]
        out["shards_reporting"] = sum(1 for pod in pods if pod.get(name, 0) > 0)
    return out


# Progress fields that count things (whole numbers), whatever the exposition's float says.
_COUNTS = frozenset(
    name
    for name, info in Progress.model_fields.items()
    if "int" in str(info.annotation) and name != "percent"
)


def running_pods(children: dict[str, list[dict[str, Any]]], stage: str) -> list[str]:
    """The IPs of a job's running pods of one stage."""
    return [
        pod["status"]["podIP"]
        for pod in children.get("Pod", ())
        if ((pod.get("metadata") or {}).get("labels") or {}).get(STAGE_LABEL) == stage
        and (pod.get("status") or {}).get("phase") == "Running"
        and (pod.get("status") or {}).get("podIP")
    ]


class ProgressScraper:
    interval = SCRAPE_SECONDS  # seconds between scrapes; the operator sets its settings' progress_seconds

    def __init__(
        self,
        cache: Cache,
        live: dict[Key, dict[str, Any]],
        request: Callable[[Key], None],
        active: Callable[[], bool],
    ):
        self.cache, self.live, self.request, self.active = cache, live, request, active

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT_SECONDS)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                await asyncio.sleep(self.interval)
                if self.active():
                    await self.scrape_all(session)

    async def scrape_all(self, session: aiohttp.ClientSession) -> None:
        for key in self.cache.jobs():
            body = self.cache.job(key) or {}
            stage = scraped(_phase(body))
            if stage is None:
                self.live.pop(key, None)
                continue
            ips = running_pods(self.cache.children(key), stage)
            texts = await asyncio.gather(*(self._fetch(session, ip) for ip in ips))
            live = live_progress(stage, [samples(t) for t in texts if t])
            if live:
                live["stage"] = str(stage)  # read back by the stage it belongs to only (Observed.live_of)
            if live and live != self.live.get(key):
                self.live[key] = live
                self.request(key)

    async def _fetch(self, session: aiohttp.ClientSession, ip: str) -> str | None:
        try:
            async with session.get(f"http://{ip}:{METRICS_PORT}/metrics") as response:
                return await response.text() if response.status == 200 else None
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as error:
            logger.debug("no metrics from %s: %s", ip, error)  # starting, or gone: next time
            return None


def _phase(body: dict[str, Any]) -> Phase | None:
    try:
        return Phase((body.get("status") or {}).get("phase"))
    except ValueError:
        return None
