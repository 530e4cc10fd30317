"""The process backend's rewrites of a command line, as pure functions (the list is in
`tests/harness/process/__init__.py`): mount paths, Service addresses, ports, image entrypoints."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

# Images whose ENTRYPOINT a container without `command` runs (kept equal to images/*.Dockerfile
# by a unit test). Matched on the image name without registry path, tag or digest.
IMAGE_ENTRYPOINTS: dict[str, list[str]] = {
    "distillery-worker-cpu": ["distillery"],
    "distillery-worker-cuda": ["distillery"],
    "distillery-operator": ["distillery", "operator"],
}


def path_rewriter(mounts: Mapping[str, str]) -> Callable[[str], str]:
    """Replace each container path prefix (a mount path) by its local directory, on path boundaries only."""
    if not mounts:
        return lambda text: text
    ordered = sorted(mounts, key=len, reverse=True)  # /data/cache before /data
    pattern = re.compile(
        r"(?<![\w./-])(" + "|".join(re.escape(p.rstrip("/") or "/") for p in ordered) + r")(?=/|$|[^\w.-])"
    )
    table = {p.rstrip("/") or "/": local for p, local in mounts.items()}
    return lambda text: pattern.sub(lambda m: table[m.group(1)], text)


def service_rewriter(addresses: Mapping[tuple[str, str, int], int], namespace: str) -> Callable[[str], str]:
    """Replace Service addresses by their local proxies.

    `addresses` maps (service, namespace, port) to the local port of its proxy. Within the
    pod's own namespace the short name works, as cluster DNS search paths make it work.
    """
    table: dict[str, str] = {}
    for (service, svc_namespace, port), local in addresses.items():
        hosts = [
            f"{service}.{svc_namespace}.svc.cluster.local",
            f"{service}.{svc_namespace}.svc",
            f"{service}.{svc_namespace}",
        ]
        if svc_namespace == namespace:
            hosts.append(service)
        for host in hosts:
            table[f"{host}:{port}"] = f"127.0.0.1:{local}"
            if port == 80:  # http://svc/path
                table[f"//{host}"] = f"//127.0.0.1:{local}"
    if not table:
        return lambda text: text
    keys = sorted(table, key=len, reverse=True)
    pattern = re.compile(r"(?<![\w.-])(" + "|".join(re.escape(k) for k in keys) + r")(?![\w.:-])")
    return lambda text: pattern.sub(lambda m: table[m.group(1)], text)


_PORT_FLAG = re.compile(r"^--[\w-]*port$")
_PORT_FLAG_INLINE = re.compile(r"^(--[\w-]*port)=(\d+)$")
_PORT_ENV = re.compile(r"(^|_)PORT$")


def remap_ports(
    argv: list[str], env: dict[str, str], ports: dict[int, int], allocate: Callable[[], int]
) -> tuple[list[str], dict[str, str]]:
    """Give every port a process listens on a free local port (rewrite 3 of the process backend).

    `ports` maps container port -> local port; it is filled in for ports met here that the
    container did not declare, so probes and proxies agree with the process.
    """

    def local(value: str) -> str:
        number = int(value)
        if number == 0:
            return value
        if number not in ports:
            ports[number] = allocate()
        return str(ports[number])

    out = list(argv)
    for i, arg in enumerate(out):
        inline = _PORT_FLAG_INLINE.match(arg)
        if inline:
            out[i] = f"{inline.group(1)}={local(inline.group(2))}"
        elif _PORT_FLAG.match(arg) and i + 1 < len(out) and out[i + 1].isdigit():
            out[i + 1] = local(out[i + 1])
    new_env = {k: (local(v) if _PORT_ENV.search(k) and v.isdigit() else v) for k, v in env.items()}
    return out, new_env


def image_entrypoint(image: str, table: Mapping[str, list[str]]) -> list[str] | None:
    """The ENTRYPOINT of a known image, matched on its name without registry, tag or digest."""
    name = image.split("@", 1)[0]
    if ":" in name.rsplit("/", 1)[-1]:
        name = name.rsplit(":", 1)[0]
    base = name.rsplit("/", 1)[-1]
    return table.get(name) or table.get(base)
