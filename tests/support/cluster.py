"""The emulated cluster every harness-backed tier runs on: an API server, a kubelet, a runtime.

`start_cluster` starts kmock's emulator (tests/harness/emulator.py) and a `Kubelet` that runs
pods in the given runtime: the process runtime by default (pods as local processes), or a
`DockerRuntime` (pods as containers). With Docker, the API server gets its HTTPS front on the
container network's gateway and pods log in with a service-account token, as in a cluster.
`make_cluster` is the fixture form: each call starts one, and all are stopped at teardown.

The integration tier's `cluster` (tests/integration/conftest.py) is another kind: the operator
in-process against kmock in the test's event loop, with the test playing every controller.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Kubelet, RestClient, serve_emulator
from tests.harness.runtime import Runtime


@dataclass
class Cluster:
    emulator: Any
    url: str
    kubelet: Kubelet
    front: Any = None  # the ApiFront (Docker runtime): its `rejected` lists the requests it refused
    first_record: int = 0  # a Docker runtime (and its records) outlives a cluster: one per session

    def api(self, namespace: str) -> RestClient:
        return RestClient(self.url, namespace)

    @property
    def runtime(self) -> Runtime:
        return self.kubelet.runtime

    @property
    def records(self) -> list[Any]:
        """The containers this cluster's kubelet started, in order (a Docker runtime's, not earlier tests')."""
        return self.runtime.records[self.first_record :]  # type: ignore[attr-defined]

    def rejected(self) -> list[Any]:
        """What the API front refused (none without a front)."""
        return list(self.front.rejected) if self.front is not None else []


@contextlib.contextmanager
def start_cluster(
    root: Path,
    namespaces: Sequence[str],
    *,
    runtime: Runtime | None = None,
    front_faults: Any = None,
    **kubelet: Any,
) -> Iterator[Cluster]:
    """The emulator with `namespaces`, and a started Kubelet (`kubelet` are its options) under `root`.

    A runtime with a `gateway` (DockerRuntime) gets the API server's HTTPS front there and pods
    that log in as service accounts (the front injecting `front_faults`, an apifront.FrontFaults,
    when given); any other runtime (the process runtime by default) talks to the emulator directly.
    """
    with contextlib.ExitStack() as stack:
        emulator, url = stack.enter_context(serve_emulator(list(namespaces)))
        front = None
        if runtime is not None and getattr(runtime, "gateway", None):
            from tests.harness.apifront import serve_api_front

            front = stack.enter_context(serve_api_front(url, runtime.gateway, front_faults))
            kubelet = {"api_access": front.access, **kubelet}
        first_record = len(getattr(runtime, "records", ()))
        node = Kubelet(url, Path(root) / "kubelet", runtime=runtime, **kubelet)
        node.start()
        emulator.pod_logs = node.read_log  # `kubectl logs` reads what the kubelet's containers wrote
        try:
            yield Cluster(emulator, url, node, front, first_record)
        finally:
            node.stop()


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    """`make_cluster(namespaces, runtime=..., **kubelet options)`: a started cluster under tmp_path."""
    with contextlib.ExitStack() as stack:

        def make(namespaces: Sequence[str], *, root: Path | None = None, **options: Any) -> Cluster:
            return stack.enter_context(start_cluster(root or tmp_path, namespaces, **options))

        yield make
