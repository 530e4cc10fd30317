"""JSON requests to the API server with the user's kubeconfig and context, as kubectl makes them.

The official client loads the configuration (KUBECONFIG, with several files joined by `:`, or
~/.kube/config; `--context`; exec and token credentials; in-cluster service accounts) and
signs the requests; the client reads and writes plain dicts, which the typed models in
`distillery.api` then validate. Every failure becomes a one-line `ClientError`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from distillery.client.errors import ClientError, NotFound, Unreachable

MERGE_PATCH = "application/merge-patch+json"
# A request that takes longer fails with a clear error rather than hang a command; log streams have no
# read deadline (a followed log may be quiet for minutes), only the connect one.
REQUEST_TIMEOUT_SECONDS = 30.0
CONNECT_TIMEOUT_SECONDS = 10.0
IN_CLUSTER_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"


@dataclass
class Connection:
    """A signed-in API client, the server's URL and the namespace commands default to."""

    api_client: Any
    host: str
    namespace: str
    context: str | None


def connect(
    context: str | None = None, namespace: str | None = None, kubeconfig: str | None = None
) -> Connection:
    """The connection kubectl would use: the kubeconfig (`kubeconfig`, else $KUBECONFIG, else
    ~/.kube/config; in a pod with none, its service account), the context (`context`, else the
    current one) and the namespace (`namespace`, else the context's, else `default`)."""
    try:
        from kubernetes import client, config
    except ModuleNotFoundError as error:
        raise ClientError(
            f"the client needs the Python package {error.name!r}; "
            "install it with: pip install 'distillery-operator[operator]'"
        ) from None

    path = kubeconfig or os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
    configuration = client.Configuration()
    files = [p for p in path.split(os.pathsep) if p]
    if not any(os.path.exists(os.path.expanduser(p)) for p in files):
        if os.environ.get("KUBERNETES_SERVICE_HOST") and os.path.exists(IN_CLUSTER_TOKEN):
            config.load_incluster_config(client_configuration=configuration)
            with open(IN_CLUSTER_TOKEN.rsplit("/", 1)[0] + "/namespace") as handle:
                default_namespace = handle.read().strip()
            return Connection(
                client.ApiClient(configuration), configuration.host, namespace or default_namespace, None
            )
        raise Unreachable(f"no kubeconfig at {path} (set KUBECONFIG or pass --kubeconfig)")
    try:
        contexts, current = config.list_kube_config_contexts(config_file=path)
        chosen = current if context is None else next((c for c in contexts if c["name"] == context), None)
        if chosen is None:
            names = ", ".join(sorted(c["name"] for c in contexts)) or "none"
            raise ClientError(f"context {context!r} is not in {path} (it has: {names})")
        config.load_kube_config(
            config_file=path, context=chosen["name"], client_configuration=configuration, persist_config=False
        )
    except config.ConfigException as error:
        raise ClientError(f"kubeconfig {path}: {error}") from None
    configuration.retries = 1  # one retry of a dropped connection; a down server fails in seconds
    default_namespace = (chosen.get("context") or {}).get("namespace") or "default"
    return Connection(
        client.ApiClient(configuration), configuration.host, namespace or default_namespace, chosen["name"]
    )


def path(group: str, version: str, plural: str, namespace: str | None = None, name: str | None = None) -> str:
    """/api/v1/... for the core group, /apis/<group>/<version>/... otherwise."""
    out = f"/api/{version}" if not group else f"/apis/{group}/{version}"
    if namespace:
        out += f"/namespaces/{namespace}"
    out += f"/{plural}"
    return f"{out}/{name}" if name else out


class Transport:
    """Requests over one connection; `what` names the object in error messages (`distillationjob "tiny"`)."""

    def __init__(self, connection: Connection):
        self.connection = connection

    def _send(
        self,
        method: str,
        resource: str,
        *,
        query: dict[str, Any] | None = None,
        body: Any = None,
        content_type: str | None = None,
        what: str = "",
        stream: bool = False,
    ) -> Any:
        import urllib3
        from kubernetes.client.exceptions import ApiException

        api = self.connection.api_client
        headers = {"Accept": "application/json, */*"}
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        params = [(k, str(v).lower() if isinstance(v, bool) else v) for k, v in (query or {}).items()]
        method, url, headers, body, _ = api.param_serialize(
            method,
            resource,
            query_params=params,
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        timeout = (CONNECT_TIMEOUT_SECONDS, None if stream else REQUEST_TIMEOUT_SECONDS)
        try:
            response = api.call_api(method, url, header_params=headers, body=body, _request_timeout=timeout)
        except (urllib3.exceptions.HTTPError, OSError, ApiException) as error:
            # The official client turns TLS failures into an ApiException with status 0.
            cause = getattr(error, "reason", None) or error
            raise Unreachable(f"no cluster reachable at {self.connection.host}: {cause}") from None
        if 200 <= response.status < 300:
            return response
        raise _status_error(response.status, response.read(), what or resource, method)

    def json(self, method: str, resource: str, **kwargs: Any) -> dict[str, Any]:
        response = self._send(method, resource, **kwargs)
        data = response.read()
        return json.loads(data) if data else {}

    def text(self, resource: str, **kwargs: Any) -> str:
        return self._send("GET", resource, **kwargs).read().decode("utf-8", "replace")

    def lines(self, resource: str, **kwargs: Any) -> Iterator[str]:
        """A streamed text body (a followed log), line by line as the server sends them."""
        response = self._send("GET", resource, stream=True, **kwargs).response
        pending = b""
        try:
            for chunk in response.stream(64 * 1024, decode_content=True):
                pending += chunk
                *complete, pending = pending.split(b"\n")
                for line in complete:
                    yield line.decode("utf-8", "replace")
            if pending:
                yield pending.decode("utf-8", "replace")
        finally:
            response.release_conn()


def _status_error(status: int, data: bytes, what: str, method: str) -> ClientError:
    try:
        message = json.loads(data).get("message") or ""
    except (ValueError, AttributeError):
        message = data.decode("utf-8", "replace").strip()
    message = " ".join(message.split())[:500]
    if status == 404:
        return NotFound(
            f"{what} not found" + (f" ({message})" if message and "not found" not in message else "")
        )
    if status in (401, 403):
        return ClientError(f"{method} {what}: the API server refused ({status}): {message}")
    if status == 409:
        return ClientError(f"{what} already exists or was changed meanwhile: {message}")
    if status == 422:
        return ClientError(f"{what} is invalid: {message}")
    return ClientError(f"{method} {what}: the API server answered {status}: {message}")
