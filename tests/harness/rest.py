"""Talking to the API server: REST paths, the blocking `RestClient` tests drive it with, and the
async `ApiClient` the harness itself uses (requests, watches, and the HTTP session probes share)."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from tests.harness.errors import HarnessError


def api_path(
    api_version: str,
    plural: str,
    namespace: str | None = None,
    name: str | None = None,
    subresource: str | None = None,
) -> str:
    """The REST path of a collection or an object: `/api/v1/...` for the core group, `/apis/g/v/...` else."""
    path = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    if namespace:
        path += f"/namespaces/{namespace}"
    path += f"/{plural}"
    if name:
        path += f"/{name}"
    if subresource:
        path += f"/{subresource}"
    return path


class RestClient:
    """Blocking REST calls to the emulator in one namespace, as kubectl makes them (for the tests that drive it)."""

    def __init__(self, url: str, namespace: str):
        self.url = url.rstrip("/")
        self.namespace = namespace

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """The decoded response, or None for a 404."""
        content_type = "application/merge-patch+json" if method == "PATCH" else "application/json"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": content_type}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return None
            raise

    def create(self, obj: dict[str, Any]) -> None:
        plural = obj["kind"].lower() + "s"
        self.call("POST", api_path(obj["apiVersion"], plural, self.namespace), obj)

    def get(self, api_version: str, plural: str, name: str) -> dict[str, Any] | None:
        return self.call("GET", api_path(api_version, plural, self.namespace, name))

    def items(self, api_version: str, plural: str) -> list[dict[str, Any]]:
        return self.call("GET", api_path(api_version, plural, self.namespace))["items"]

    def pods(self, **labels: str) -> list[dict[str, Any]]:
        # The emulator ignores labelSelector; filter here, as a real API server would.
        items = self.items("v1", "pods")
        return [p for p in items if all(p["metadata"]["labels"].get(k) == v for k, v in labels.items())]


class ApiClient:
    """The harness's own async access to the API server, as a node's kubelet has it.

    Open it (`async with`) inside the event loop that uses it; `session` is also what HTTP
    probes go through.
    """

    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ApiClient:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
        self._session = aiohttp.ClientSession(timeout=timeout, read_bufsize=2**22)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "ApiClient used outside `async with`"
        return self._session

    async def request(self, method: str, path: str, body: Any = None, *, missing_ok: bool = False) -> Any:
        """The decoded response; None for a 404 when `missing_ok`; HarnessError for any other error."""
        headers = {"Content-Type": "application/merge-patch+json"} if method == "PATCH" else {}
        data = json.dumps(body) if body is not None else None
        async with self.session.request(
            method, self.url + path, data=data, headers=headers or None
        ) as response:
            if response.status == 404 and missing_ok:
                return None
            text = await response.text()
            if response.status >= 400:
                raise HarnessError(f"{method} {path}: HTTP {response.status}: {text[:500]}")
            return json.loads(text) if text else {}

    async def watch(self, path: str, accepted: asyncio.Event) -> AsyncIterator[dict[str, Any]]:
        """The events of one watch of a collection, until the server ends it; `accepted` is set
        once the server has taken the watch."""
        async with self.session.get(self.url + path, params={"watch": "true"}) as response:
            if response.status >= 400:
                raise HarnessError(
                    f"cannot watch {path} (HTTP {response.status}); the API server must serve it "
                    "(register it in the emulator)"
                )
            accepted.set()
            async for line in response.content:
                if line.strip():
                    yield json.loads(line)
