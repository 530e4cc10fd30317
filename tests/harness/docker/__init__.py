"""The Docker backend: each pod runs as containers of the images its manifest names, with no
rewrites of paths, ports or names.

A pod is a sandbox container (the pause container's part: `sleep infinity` as uid 65535, read-only,
no capabilities) on a user-defined bridge network of the runtime's own: its address is the pod's
`status.podIP`, its hostname the pod's (`spec.hostname`, else its name), its own DNS names
(`hostname.subdomain` under a headless Service, tests/harness/dns.py) network aliases, its resolv.conf the cluster's DNS search path
(`<ns>.svc.cluster.local svc.cluster.local cluster.local`, ndots 5). Each container of the pod
joins that network namespace (`--network container:<sandbox>`), so a restarted container keeps
the pod's address and the pod's containers share localhost. The translation of a container
(`args.py`, pure functions) honours:

- `command`/`args` exactly as written (command replaces the image's ENTRYPOINT, args its CMD),
  `workingDir`, `env`/`envFrom`/`valueFrom` as the kubelet resolved them (`podconfig.py`), the
  image's own ENV underneath;
- `securityContext` (the container's over the pod's): runAsUser/runAsGroup, fsGroup and
  supplementalGroups, runAsNonRoot (checked against the image's USER as the kubelet does: a pod
  that would run as root waits in CreateContainerConfigError), readOnlyRootFilesystem,
  capabilities, allowPrivilegeEscalation false (no-new-privileges), privileged, seccomp;
- volumes at their mountPath: a claim is a host directory per claim (`Kubelet(claims=...)`),
  group-owned by the pod's fsGroup as the kubelet makes it; an emptyDir a directory of the
  pod (0777), or with `medium: Memory` an engine tmpfs volume of `sizeLimit` (so /dev/shm is
  as large as the pod says); configMap, secret, downwardAPI and projected volumes (the
  service-account token included) files of the pod, read-only; the termination-message file
  at `terminationMessagePath` (the kubelet reads it back, or the log's tail with
  FallbackToLogsOnError);
- CPU and memory: limits.cpu -> `--cpus`, limits.memory -> `--memory` (no swap),
  requests.cpu -> CPU shares;
- `imagePullPolicy` as the kubelet honours it (absent: the API server's default, Always for
  `:latest` or no tag, else IfNotPresent): Always pulls at each start, IfNotPresent only when
  the engine lacks the image, Never never (an absent image waits in ErrImageNeverPull). A
  pull is a real `docker pull` from the image's registry, one at a time; a failed one shows
  as ErrImagePull, then ImagePullBackOff with its message, and is retried after a back-off.
  `docker create` itself never pulls (`--pull never`), nor does a sandbox: the utility image
  is the node's pause image, present in the engine.

Services (`services.py`): each is a small forwarder container that holds the Service's DNS
names as network aliases, its "ClusterIP", forwarding to the harness's kube-proxy on the
network's gateway, which picks a ready endpoint. Probes and endpoints reach pods at their own
address from the host. Signals: SIGSTOP/SIGCONT freeze and thaw the whole container
(`docker pause`; where the engine cannot freeze, SIGSTOP/SIGCONT to each of its processes
from the host); others go to its first process (`docker kill --signal`), as a runtime
sends them, so a process that ignores SIGTERM as PID 1 waits out its grace period as in a
cluster. Exit codes are the engine's (128 + N for signal N).

Everything it makes carries the label `distillery.test.harness=<runtime id>` and is removed
by that label only (`close()`); leftovers of test processes that died are swept at `open()`.
`records` lists every container started, with the user its first process really ran as (read
from /proc), `pulls` every image pulled. Stdout and stderr are appended to
`<pod dir>/<container>.log`, the `docker create` line to `<container>.command.json`.

Not emulated: shared process or IPC namespaces between a pod's containers, ephemeral
containers, a disk emptyDir's sizeLimit (enforced by eviction in a cluster), imagePullSecrets
(the engine's own credentials are used).
"""

from tests.harness.docker.args import Mount, create_args, non_root_problem, quantity, resource_args
from tests.harness.docker.engine import Docker, DockerError
from tests.harness.docker.runtime import LABEL, ContainerRecord, DockerRuntime, DockerSandbox

__all__ = [
    "LABEL",
    "ContainerRecord",
    "Docker",
    "DockerError",
    "DockerRuntime",
    "DockerSandbox",
    "Mount",
    "create_args",
    "non_root_problem",
    "quantity",
    "resource_args",
]
