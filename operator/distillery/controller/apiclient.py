"""A small asynchronous Kubernetes API client: JSON in and out, with the official client's credentials.

The operator's writes are few kinds of plain requests (create, merge-patch, delete), and at a
thousand jobs their cost is the operator's cost: the official client spends about 1 ms of CPU
per call building and decoding model objects in a thread, aiohttp about 0.25 ms in the event
loop. Credentials come from the official client's default configuration, which kopf's login
(kubeconfig or in-cluster service account) sets; the token is read per request, so a rotated
service-account token is used as soon as it is on disk.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import ssl
import time
from typing import Any

import aiohttp
from kubernetes import client
from kubernetes.client.rest import ApiException

from distillery import backoff
from distillery.controller import faults, metrics
from distillery.controller.ratelimit import WRITES, TokenBucket

logger = logging.getLogger("distillery.api")

MERGE_PATCH = "application/merge-patch+json"
# A request that takes longer than this fails (and is retried as transient): a hung connection
# must not stall a reconcile. The API server answers in well under a second, or is in trouble.
REQUEST_TIMEOUT_SECONDS = 30.0
CONNECT_TIMEOUT_SECONDS = 10.0
TOKEN_REFRESH_SECONDS = 60.0
# A request that meets a 429, a 5xx, a timeout or a broken connection is tried again this many times,
# after 0.25-0.5, 0.5-1, 1-2 s (jittered, so replicas and jobs do not retry in step; a 429's Retry-After
# is honoured up to the cap). Past that the reconcile gives up and retries the whole job with its own,
# longer backoff (`reconcile`): a short blip costs one request, an outage does not pile up requests.
REQUEST_RETRIES = 3
RETRY_BASE_SECONDS = 0.5
RETRY_CAP_SECONDS = 10.0


def path(
    group: str,
    version: str,
    plural: str,
    namespace: str | None = None,
    name: str | None = None,
    subresource: str | None = None,
) -> str:
    """/api/v1/... for the core group, /apis/<group>/<version>/... otherwise."""
    out = f"/api/{version}" if not group else f"/apis/{group}/{version}"
    if namespace:
        out += f"/namespaces/{namespace}"
    out += f"/{plural}"
    if name:
        out += f"/{name}"
    if subresource:
        out += f"/{subresource}"
    return out


def _ssl_context(config: client.Configuration) -> ssl.SSLContext | bool:
    if not config.host.startswith("https"):
        return False
    if not config.verify_ssl:
        return False
    context = ssl.create_default_context(cafile=config.ssl_ca_cert)
    if config.cert_file:
        context.load_cert_chain(config.cert_file, config.key_file)
    return context


class Api:
    """One session per event loop; `request` raises ApiException (as the official client does) for non-2xx."""

    def __init__(
        self,
        logged_in: asyncio.Event | None = None,
        timeout: float | None = None,
        rng: random.Random | None = None,
        limiter: TokenBucket | None = None,
        configuration: client.Configuration | None = None,
    ) -> None:
        # Set once kopf's login has put the credentials in the official client's default
        # configuration; a request made before waits for it rather than take the library's default.
        self.logged_in = logged_in
        self.timeout = timeout  # None: REQUEST_TIMEOUT_SECONDS
        self.rng = rng or random.Random()
        # The client-side write limit (`ratelimit`; the settings' api_qps / api_burst); None: none.
        self.limiter = limiter
        self._session: aiohttp.ClientSession | None = None
        # None: the official client's default configuration (kopf's login), read at the first request.
        self._given = configuration
        self._config: client.Configuration | None = configuration
        self._token: tuple[str | None, float] = (None, 0.0)  # the Authorization value, and when it was read

    def _configure(self) -> client.Configuration:
        if self._config is None:
            self._config = client.Configuration.get_default_copy()
        return self._config

    async def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            config = self._configure()
            total = self.timeout or REQUEST_TIMEOUT_SECONDS
            timeout = aiohttp.ClientTimeout(total=total, connect=min(CONNECT_TIMEOUT_SECONDS, total))
            connector = aiohttp.TCPConnector(ssl=_ssl_context(config), limit=64)
            self._session = aiohttp.ClientSession(
                config.host.rstrip("/"), timeout=timeout, connector=connector
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _headers(self, content_type: str | None) -> dict[str, str]:
        config = self._configure()
        headers = {"Accept": "application/json", "User-Agent": "distillery-operator"}
        token, read_at = self._token
        if time.monotonic() - read_at > TOKEN_REFRESH_SECONDS:
            # Runs the refresh hook (a rotated service-account token, a kubeconfig exec plugin): costly, so
            # once a minute, well within a projected token's lifetime.
            # The client keeps the token under "BearerToken" since 36.0.1 (in-cluster and kubeconfig
            # logins alike), under "authorization" before.
            token = config.get_api_key_with_prefix("BearerToken") or config.get_api_key_with_prefix(
                "authorization"
            )
            self._token = (token, time.monotonic())
        if token:
            headers["Authorization"] = token
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    async def request(
        self,
        method: str,
        url: str,
        body: Any = None,
        content_type: str | None = None,
        params: dict[str, str] | None = None,
        accept: str | None = None,
        idempotent: bool = True,
        retries: int = REQUEST_RETRIES,
        limited: bool = True,
    ) -> dict[str, Any] | None:
        """The decoded answer; raises ApiException for an error status, aiohttp/asyncio errors when unreachable.

        A 429, a 5xx, a timeout or a broken connection is retried (`REQUEST_RETRIES`); any other 4xx is
        the answer. A request that is not `idempotent` (a create with generateName) is retried only on a
        429, the one failure that says the server did nothing. `retries=0`: a caller that retries on its own
        schedule (the leader election, whose every round must end well within the Lease). A write waits for
        the client-side rate limit (each attempt takes a token, as in client-go) unless `limited` is False
        (the leader election's Lease, which must not queue behind a burst of job writes)."""
        data = json.dumps(body) if body is not None else None
        if self.logged_in is not None:
            await self.logged_in.wait()
        attempt = 0
        throttle = self.limiter is not None and limited and method in WRITES
        while True:
            if throttle:
                waited = await self.limiter.acquire()
                if waited:
                    metrics.API_WRITE_WAIT.inc(waited)
            try:
                return await self._send(method, url, data, content_type, params, accept)
            except (ApiException, *TRANSIENT) as error:
                reason = fault_reason(error)
                retry = reason == "throttled" or (idempotent and reason in RETRIED)
                if not retry or attempt >= retries:
                    raise
                retry_after = retry_after_of(error)
                wait = backoff.delay(attempt, RETRY_BASE_SECONDS, RETRY_CAP_SECONDS, self.rng, retry_after)
                metrics.API_RETRIES.labels(reason).inc()
                faults.note(reason)  # against the job being reconciled, for its Events
                logger.info("%s %s: %s; retrying in %.1f s", method, url, reason, wait)
                await asyncio.sleep(wait)
                attempt += 1

    async def _send(
        self,
        method: str,
        url: str,
        data: str | None,
        content_type: str | None,
        params: dict[str, str] | None,
        accept: str | None,
    ) -> dict[str, Any] | None:
        for attempt in (0, 1):
            session = await self.session()
            headers = self._headers(content_type or ("application/json" if data is not None else None))
            if accept:
                headers["Accept"] = accept
            async with session.request(method, url, data=data, headers=headers, params=params) as response:
                text = await response.text()
                if response.status == 401 and attempt == 0:
                    # A token refreshed by kopf's re-login (or on disk): start over with the new configuration.
                    self._config, self._token = self._given, (None, 0.0)
                    await self.close()
                    continue
                if response.status >= 400:
                    error = ApiException(status=response.status, reason=response.reason)
                    error.body = text
                    error.headers = dict(response.headers)
                    raise error
                return json.loads(text) if text.strip() else None
        raise AssertionError("not reached")


TRANSIENT = (aiohttp.ClientError, asyncio.TimeoutError, OSError)
# The faults retried (with "throttled"): the server may not have done what was asked.
RETRIED = ("server_error", "timeout", "unreachable")


def fault_reason(error: BaseException) -> str:
    """The class of an operator fault, a bounded label: throttled (429), server_error (5xx), timeout,
    unreachable (the connection failed), refused (any other 4xx), unexpected (an error in our own code)."""
    if isinstance(error, ApiException):
        status = error.status or 0
        if status == 429:
            return "throttled"
        if status >= 500:
            return "server_error"
        return "refused" if status else "unreachable"
    if isinstance(error, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return "timeout"
    if isinstance(error, TRANSIENT):
        return "unreachable"
    return "unexpected"


def retry_after_of(error: BaseException) -> float | None:
    """The seconds a 429 (or 503) asks the client to wait: its Retry-After header, else the Status body's
    details.retryAfterSeconds (what the API server's priority and fairness sends)."""
    if not isinstance(error, ApiException):
        return None
    headers = {k.lower(): v for k, v in (getattr(error, "headers", None) or {}).items()}
    seconds = backoff.retry_after_seconds(headers.get("retry-after"))
    if seconds is not None:
        return seconds
    try:
        details = json.loads(error.body or "{}").get("details") or {}
        return float(details["retryAfterSeconds"])
    except (TypeError, ValueError, KeyError, AttributeError):
        return None
