"""Leader election with a coordination.k8s.io Lease, as client-go and controller-runtime do it.

Every replica watches and keeps its cache; only the holder of the Lease reconciles. The
holder renews the Lease every `renew_seconds`; the others take it over once its record has
not changed for `lease_seconds` (measured on their own clock, so clock skew between nodes
does not matter). Updates carry the Lease's resourceVersion (a merge patch with it is applied
only if the Lease is unchanged): of two replicas racing for an expired Lease, the API server
lets exactly one write win. A leader that cannot renew within
`lease_seconds` steps down before anyone else can take over.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from kubernetes.client.rest import ApiException

from distillery.controller import metrics
from distillery.controller.apiclient import MERGE_PATCH, TRANSIENT, Api, path

logger = logging.getLogger("distillery.leader")

LEASE_SECONDS = 15
RENEW_SECONDS = 5


def identity(pod_name: str = "") -> str:
    """A replica's name in the Lease: its pod's name (unique in a Deployment) and a random tail."""
    return f"{pod_name or socket.gethostname()}-{uuid.uuid4().hex[:6]}"


def _microtime(moment: float | None = None) -> str:
    when = datetime.fromtimestamp(moment if moment is not None else time.time(), timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElection:
    def __init__(
        self,
        api: Api,
        name: str,
        namespace: str,
        identity: str,
        on_elected: Callable[[], None] = lambda: None,
        lease_seconds: int = LEASE_SECONDS,
        renew_seconds: int = RENEW_SECONDS,
    ):
        self.api, self.name, self.namespace, self.identity = api, name, namespace, identity
        self.url = path("coordination.k8s.io", "v1", "leases", namespace, name)
        self.on_elected = on_elected
        self.lease_seconds, self.renew_seconds = lease_seconds, renew_seconds
        self.leader = False
        self._renewed = 0.0  # monotonic time of our last successful renewal
        self._observed: tuple[Any, float] = (None, 0.0)  # (the other holder's record, when it last changed)

    async def run(self) -> None:
        metrics.LEADER.set(0)
        while True:
            try:
                held = await self.try_acquire_or_renew()
            except (ApiException, *TRANSIENT) as error:
                logger.warning("leader election: %s", error)
                held = False
            except Exception:  # a bug must not end the election loop: this replica would never lead
                logger.exception("leader election failed unexpectedly; trying again")
                held = False
            if self.leader and not held and time.monotonic() - self._renewed > self.lease_seconds:
                self._set(False)
            elif held:
                self._renewed = time.monotonic()
                self._set(True)
            await asyncio.sleep(self.renew_seconds)

    def _set(self, leader: bool) -> None:
        if leader == self.leader:
            return
        self.leader = leader
        metrics.LEADER.set(1 if leader else 0)
        if leader:
            logger.info(
                "leader election: %s holds Lease %s/%s; reconciling", self.identity, self.namespace, self.name
            )
            self.on_elected()
        else:
            logger.warning("leader election: lost Lease %s/%s; standing by", self.namespace, self.name)

    async def try_acquire_or_renew(self) -> bool:
        """One round: create the Lease, renew ours, or take over one whose holder stopped renewing."""
        try:
            lease = await self.api.request("GET", self.url, retries=0)
        except ApiException as error:
            if error.status != 404:
                raise
            return await self._write(None)
        spec = lease.get("spec") or {}
        if spec.get("holderIdentity") == self.identity:
            return await self._write(lease)
        record = (spec.get("holderIdentity"), spec.get("renewTime"), spec.get("leaseTransitions"))
        if record != self._observed[0]:
            self._observed = (record, time.monotonic())
            return False
        duration = spec.get("leaseDurationSeconds") or self.lease_seconds
        if spec.get("holderIdentity") and time.monotonic() - self._observed[1] < duration:
            return False  # someone else holds it and keeps renewing
        return await self._write(lease)

    async def _write(self, lease: dict[str, Any] | None) -> bool:
        now = _microtime()
        spec = {"holderIdentity": self.identity, "leaseDurationSeconds": self.lease_seconds, "renewTime": now}
        try:
            if lease is None:
                body = {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": {**spec, "acquireTime": now, "leaseTransitions": 0},
                }
                await self.api.request(
                    "POST",
                    path("coordination.k8s.io", "v1", "leases", self.namespace),
                    body,
                    retries=0,
                    limited=False,  # a Lease renewed late is a leader lost: never behind the job writes
                )
            else:
                old = lease.get("spec") or {}
                ours = old.get("holderIdentity") == self.identity
                transitions = (old.get("leaseTransitions") or 0) + (0 if ours else 1)
                acquired = old.get("acquireTime") if ours and old.get("acquireTime") else now
                # A merge patch carrying the resourceVersion it was read at: the API server applies it only
                # if the Lease has not changed since (409 otherwise), as a replace would.
                body = {
                    "metadata": {"resourceVersion": lease["metadata"]["resourceVersion"]},
                    "spec": {**spec, "acquireTime": acquired, "leaseTransitions": transitions},
                }
                await self.api.request("PATCH", self.url, body, MERGE_PATCH, retries=0, limited=False)
        except ApiException as error:
            if error.status == 409:  # another replica wrote first
                return False
            raise
        return True
