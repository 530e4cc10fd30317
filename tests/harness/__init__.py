"""A cluster for tests, around kmock's in-memory API server: the kubelet, the Job and Deployment
controllers and the Service proxy, with each pod's containers run by a pluggable runtime.

THIS IS A TEST FIXTURE, not part of Distillery. No kind cluster can run on the machines the
tests run on, so the e2e tier reproduces as much of a cluster as it can around the emulator:
`Kubelet` talks to the API server over HTTP, like a node would, and plays these parts for
the objects it sees there, one module each:

- `kubelet.py`: `Kubelet`, which ties the parts together: watches, the garbage collector for
  the Pods it made, its own thread, and what a test calls (`pods()`, `kill()`, `diagnostics()`).
- `job.py`, `deployment.py` (base: `controller.py`): the Job and Deployment controllers.
- `service_proxy.py`: kube-proxy and cluster DNS, a TCP proxy per Service port.
- `dns.py`: cluster DNS's rules for a pod's own names (hostname, and `hostname.subdomain` under a
  headless Service: how an Indexed Job's pods find pod 0), which a runtime that resolves names answers.
- `pod.py`: one pod's lifecycle: init containers, `restartPolicy`, back-off, termination
  messages, the status it writes (`probes.py`: startup, readiness, liveness).
- `podconfig.py`: what the kubelet resolves from the API before a container starts
  (env/envFrom, fieldRefs, `$(VAR)`, volumes as host directories).
- `runtime.py`: the seam, the `Runtime` protocol that starts, signals and waits for a
  container, runs exec probes and gives a pod's address. `process/` is the backend that
  runs each container as a local process group, with the rewrites its docstring lists;
  the default. A container-engine backend (each pod its own network address, volumes at
  their mountPath, no rewrites) implements the same protocol beside it.
- `rest.py`: REST paths, the blocking `RestClient` tests use, the async `ApiClient`.
- `emulator.py`: `serve_emulator` (kmock on a local port, in a thread) and `kubeconfig`.
- `kueue.py`: Kueue's documented admission contract (`Kubelet(kueue=True)` plays its webhooks: pods
  labelled with a queue get the `kueue.x-k8s.io/admission` scheduling gate, Jobs labelled with one stay
  suspended; `Kueue` admits on a test's command). A pod with scheduling gates stays Pending
  (PodScheduled False, SchedulingGated) and runs once its last gate is removed, as in Kubernetes.
- `helpers.py`, `errors.py`: pure functions and the harness's errors.

    with serve_emulator(["ns1"]) as (emulator, url):
        with Kubelet(url, tmp_path, claims={"data": storage}, runtime=ProcessRuntime(env=IMAGE_ENV)):
            ...

Not emulated (an object that relies on them is refused with a `HarnessError` rather than
run wrongly): Job `podFailurePolicy` and `successPolicy`, label selectors with
`matchExpressions`. Ignored: scheduling (but for scheduling gates), node selectors and tolerations, NetworkPolicies,
ReplicaSets and rolling updates; security contexts and resources are the runtime's to
honour (the process backend ignores them).
"""

from tests.harness.emulator import RESOURCES, kubeconfig, serve_emulator
from tests.harness.errors import ConfigError, HarnessError
from tests.harness.helpers import compress_indexes, exit_code, expand_references, labels_match, log_tail
from tests.harness.kubelet import Kubelet
from tests.harness.pod import PodInfo
from tests.harness.process import ProcessRuntime
from tests.harness.rest import ApiClient, RestClient, api_path
from tests.harness.runtime import (
    Address,
    ContainerConfig,
    ContainerHandle,
    ImagePullError,
    PodSandbox,
    Runtime,
    ServiceKey,
    StartError,
)

__all__ = [
    "RESOURCES",
    "Address",
    "ApiClient",
    "ConfigError",
    "ContainerConfig",
    "ContainerHandle",
    "HarnessError",
    "ImagePullError",
    "Kubelet",
    "PodInfo",
    "PodSandbox",
    "ProcessRuntime",
    "RestClient",
    "Runtime",
    "ServiceKey",
    "StartError",
    "api_path",
    "compress_indexes",
    "exit_code",
    "expand_references",
    "kubeconfig",
    "labels_match",
    "log_tail",
    "serve_emulator",
]
