"""The process backend: each container of a pod runs as a local process group.

There is no container runtime on the machines the quick tiers run on, so this backend runs
each container's `command` + `args` exactly as written in the manifest (after the kubelet's
`$(VAR)` expansion) as a process on this machine. A container runs as a process group of
its own (`start_new_session`), and each of its processes carries a marker variable
(`KUBELET_HARNESS_CONTAINER`), so stopping a pod ends every process it started, as a cgroup
does, even those that left the group (a stage that starts vLLM in a session of its own);
its output goes to `<root>/pods/<namespace>/<pod>/<container>.log`, and the exact local
command line it ran to `<container>.command.json` beside it.

The only differences between a manifest's command line and what runs here are these
rewrites, applied consistently to `command`, `args`, env values and `workingDir`:

1. Volume mount paths. A `persistentVolumeClaim` maps to the directory the test gives
   for that claim (`claims=`), else to `<root>/claims/<namespace>/<claim>`; `emptyDir`,
   `configMap` and `secret` volumes to a directory of the pod. Every occurrence of a
   `mountPath` (`/data`, `/data/x`; not `/database`) is replaced by that directory, so a
   path the operator builds from the mount path means the same file here.
2. Service addresses. `<svc>:<port>`, `<svc>.<ns>[.svc[.cluster.local]]:<port>` (and
   `http://<svc>/` for port 80) become `127.0.0.1:<proxy port>` for every Service that
   exists when the pod starts.
3. Ports. Pods share one network namespace here, so every container port gets a free
   local port: a `--<name>port N` / `--<name>port=N` argument or a `*PORT` env var holding
   N is given that port (that is how vLLM's `--port 8000` and each shard's
   `--metrics-port 9090` stay apart), and probes and Service proxies use the same map.
   A declared port that no argument or env var carries keeps its number.
4. The termination message path becomes a file of the pod; `DISTILLERY_TERMINATION_LOG`
   names it when the container does not set that variable itself.
5. An executable named by an absolute path that exists only in the image (e.g.
   `/opt/distillery/bin/distillery`) is looked up by its base name on PATH; a container
   without `command` gets its image's ENTRYPOINT from `IMAGE_ENTRYPOINTS`.

Processes get a small environment, as a container would: PATH (this interpreter's
directory first, standing in for the image's), PYTHONPATH when the test has one (so a
checkout's code runs in the pods as an image would carry it), LANG, HOSTNAME, HOME (a directory of the
pod), what the test passes as `ProcessRuntime(env=...)` (the image's ENV, e.g.
`VLLM_CPU_KVCACHE_SPACE`), then the container's own variables. Every pod's address is
a loopback address of its own (127.0.x.y): its declared container ports are forwarded from
there to where its processes listen. Ignored: security contexts and resource limits.
"""

from tests.harness.process.rewrites import (
    IMAGE_ENTRYPOINTS,
    image_entrypoint,
    path_rewriter,
    remap_ports,
    service_rewriter,
)
from tests.harness.process.runtime import ProcessRuntime

__all__ = [
    "IMAGE_ENTRYPOINTS",
    "ProcessRuntime",
    "image_entrypoint",
    "path_rewriter",
    "remap_ports",
    "service_rewriter",
]
