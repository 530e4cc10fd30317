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
import ssl
import time
from typing import Any

import aiohttp
from kubernetes import client
from kubernetes.client.rest import ApiException

MERGE_PATCH = "application/merge-patch+json"
# A request that takes longer than this fails (and is retried as transient): a hung connection
# must not stall a reconcile.
REQUEST_TIMEOUT_SECONDS = 60.0
CONNECT_TIMEOUT_SECONDS = 10.0
TOKEN_REFRESH_SECONDS = 60.0


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

    def __init__(self, logged_in: asyncio.Event | None = None) -> None:
        # Set once kopf's login has put the credentials in the official client's default
        # configuration; a request made before waits for it rather than take the library's default.
        self.logged_in = logged_in
        self._session: aiohttp.ClientSession | None = None
        self._config: client.Configuration | None = None
        self._token: tuple[str | None, float] = (None, 0.0)  # the Authorization value, and when it was read

    def _configure(self) -> client.Configuration:
        if self._config is None:
            self._config = client.Configuration.get_default_copy()
        return self._config

    async def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            config = self._configure()
            timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS, connect=CONNECT_TIMEOUT_SECONDS)
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
    ) -> dict[str, Any] | None:
        """The decoded answer; raises ApiException for an error status, aiohttp/asyncio errors when unreachable."""
        data = json.dumps(body) if body is not None else None
        if self.logged_in is not None:
            await self.logged_in.wait()
        for attempt in (0, 1):
            session = await self.session()
            headers = self._headers(content_type or ("application/json" if data is not None else None))
            if accept:
                headers["Accept"] = accept
            async with session.request(method, url, data=data, headers=headers, params=params) as response:
                text = await response.text()
                if response.status == 401 and attempt == 0:
                    # A token refreshed by kopf's re-login (or on disk): start over with the new configuration.
                    self._config, self._token = None, (None, 0.0)
                    await self.close()
                    continue
                if response.status >= 400:
                    error = ApiException(status=response.status, reason=response.reason)
                    error.body = text
                    raise error
                return json.loads(text) if text.strip() else None
        raise AssertionError("not reached")


TRANSIENT = (aiohttp.ClientError, asyncio.TimeoutError, OSError)
