"""What the kubelet resolves before any runtime starts a container, the same for every backend:
volumes as host directories (claims, emptyDirs, and configMap, secret, downwardAPI and
projected volumes written as files), env and envFrom (Secrets and ConfigMaps read from the API
server, simple fieldRefs, resourceFieldRefs, and the `kubernetes` Service's variables when the
kubelet has `api_access`), and `$(VAR)` expansion of command and args.

A missing Secret or ConfigMap raises `ConfigError`, which the pod retries (the kubelet's
CreateContainerConfigError); what the harness cannot emulate raises `HarnessError`.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.harness.errors import ConfigError, HarnessError
from tests.harness.helpers import expand_references
from tests.harness.rest import ApiClient, api_path
from tests.harness.runtime import ContainerConfig

if TYPE_CHECKING:
    from tests.harness.container import Container
    from tests.harness.pod import Pod

ClaimDirectory = Callable[[str, str], Path]  # (namespace, claim) -> host directory


async def container_config(
    api: ApiClient, pod: Pod, container: Container, claim_dir: ClaimDirectory
) -> ContainerConfig:
    """Everything a runtime needs to start `container` of `pod`."""
    spec = container.spec
    mounts = await volume_mounts(api, pod, spec, claim_dir)
    access = pod.kubelet.api_access
    env = {**(access.env() if access is not None else {}), **await environment(api, pod, spec)}
    return ContainerConfig(
        name=spec["name"],
        image=spec.get("image", ""),
        command=[expand_references(a, env) for a in spec.get("command") or []],
        args=[expand_references(a, env) for a in spec.get("args") or []],
        env=env,
        working_dir=spec.get("workingDir") or "",
        mounts=mounts,
        ports=list(spec.get("ports") or []),
        termination_message_path=spec.get("terminationMessagePath", "/dev/termination-log"),
        termination_log=container.termination_log,
        log=container.log,
        spec=spec,
    )


async def volume_mounts(
    api: ApiClient, pod: Pod, spec: dict[str, Any], claim_dir: ClaimDirectory
) -> dict[str, Path]:
    """mountPath -> host directory for each of the container's volumeMounts (subPath applied)."""
    volumes = {v["name"]: v for v in pod.spec.get("volumes") or []}
    mounts: dict[str, Path] = {}
    for mount in spec.get("volumeMounts") or []:
        volume = volumes.get(mount["name"])
        if volume is None:
            raise HarnessError(
                f"container {spec['name']} mounts volume {mount['name']!r}, which the pod does not define"
            )
        local = await volume_directory(api, pod, volume, claim_dir)
        if mount.get("subPath"):
            local = local / mount["subPath"]
            local.mkdir(parents=True, exist_ok=True)
        mounts[mount["mountPath"]] = local
    return mounts


async def volume_directory(
    api: ApiClient, pod: Pod, volume: dict[str, Any], claim_dir: ClaimDirectory
) -> Path:
    """The host directory of one volume: the claim's, or one of the pod's (configMap/secret files written)."""
    if "persistentVolumeClaim" in volume:
        local = claim_dir(pod.namespace, volume["persistentVolumeClaim"]["claimName"])
    elif "emptyDir" in volume:
        local = pod.dir / "volumes" / volume["name"]
    elif any(kind in volume for kind in ("configMap", "secret", "downwardAPI", "projected")):
        local = pod.dir / "volumes" / volume["name"]
        local.mkdir(parents=True, exist_ok=True)
        sources = (volume["projected"].get("sources") or []) if "projected" in volume else [volume]
        for source in sources:
            await write_volume_source(api, pod, source, local)
    else:
        raise HarnessError(
            f"volume {volume['name']!r}: only persistentVolumeClaim, emptyDir, configMap, secret, "
            "downwardAPI and projected volumes are emulated"
        )
    local.mkdir(parents=True, exist_ok=True)
    return local


async def write_volume_source(api: ApiClient, pod: Pod, source: dict[str, Any], local: Path) -> None:
    """The files of a configMap, secret, downwardAPI or serviceAccountToken source (or volume) in `local`."""
    files: dict[str, bytes] = {}
    if "configMap" in source or "secret" in source:
        ref = source.get("configMap") or source.get("secret") or {}
        name = ref.get("name") or ref.get("secretName")
        kind = "configmaps" if "configMap" in source else "secrets"
        data = await object_data(api, pod.namespace, kind, name, ref.get("optional", False))
        items = ref.get("items") or [{"key": k, "path": k} for k in data]
        files = {item["path"]: data[item["key"]] for item in items if item["key"] in data}
    elif "downwardAPI" in source:
        for item in source["downwardAPI"].get("items") or []:
            if "fieldRef" not in item:
                raise HarnessError(f"downwardAPI item {item.get('path')!r}: only fieldRef is emulated")
            files[item["path"]] = field_value(pod, item["fieldRef"]["fieldPath"]).encode()
    elif "serviceAccountToken" in source:
        if pod.kubelet.api_access is None:
            raise HarnessError("a serviceAccountToken volume needs the Kubelet's api_access (a token issuer)")
        files[source["serviceAccountToken"]["path"]] = pod.kubelet.api_access.token.encode()
    else:
        raise HarnessError(f"volume source {sorted(source)} is not emulated")
    for path, content in files.items():
        (local / path).parent.mkdir(parents=True, exist_ok=True)
        (local / path).write_bytes(content)


async def object_data(
    api: ApiClient, namespace: str, plural: str, name: str, optional: bool
) -> dict[str, bytes]:
    """A Secret's or ConfigMap's data as bytes; ConfigError (retried) when it is missing."""
    obj = await api.request("GET", api_path("v1", plural, namespace, name), missing_ok=True)
    if obj is None:
        if optional:
            return {}
        raise ConfigError(f'{plural[:-1]} "{name}" not found')
    out: dict[str, bytes] = {}
    if plural == "secrets":
        out.update({k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()})
    else:
        out.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
        out.update({k: v.encode() for k, v in (obj.get("data") or {}).items()})
    # The emulator does not fold stringData into data as the API server does.
    out.update({k: v.encode() for k, v in (obj.get("stringData") or {}).items()})
    return out


async def environment(api: ApiClient, pod: Pod, spec: dict[str, Any]) -> dict[str, str]:
    """The container's variables from envFrom, then env (later ones may use earlier ones as $(VAR))."""
    env: dict[str, str] = {}
    for source in spec.get("envFrom") or []:
        ref = source.get("secretRef") or source.get("configMapRef") or {}
        plural = "secrets" if "secretRef" in source else "configmaps"
        data = await object_data(api, pod.namespace, plural, ref["name"], ref.get("optional", False))
        env.update({source.get("prefix", "") + k: v.decode() for k, v in data.items()})
    for item in spec.get("env") or []:
        name = item["name"]
        if "value" in item or "valueFrom" not in item:
            env[name] = expand_references(item.get("value", ""), env)
            continue
        value = await _value_from(api, pod, spec, name, item["valueFrom"])
        if value is not None:
            env[name] = value
    return env


async def _value_from(
    api: ApiClient, pod: Pod, spec: dict[str, Any], name: str, source: dict[str, Any]
) -> str | None:
    """One env var's valueFrom; None for an optional key that is absent."""
    if "secretKeyRef" in source or "configMapKeyRef" in source:
        ref = source.get("secretKeyRef") or source.get("configMapKeyRef")
        plural = "secrets" if "secretKeyRef" in source else "configmaps"
        data = await object_data(api, pod.namespace, plural, ref["name"], ref.get("optional", False))
        if ref["key"] in data:
            return data[ref["key"]].decode()
        if not ref.get("optional", False):
            raise ConfigError(
                f"couldn't find key {ref['key']} in {plural[:-1]} {pod.namespace}/{ref['name']}"
            )
        return None
    if "fieldRef" in source:
        return field_value(pod, source["fieldRef"]["fieldPath"])
    if "resourceFieldRef" in source:
        resources = spec.get("resources") or {}
        resource = source["resourceFieldRef"]["resource"]
        group, _, key = resource.partition(".")
        return str((resources.get(group) or {}).get(key, "0"))
    raise HarnessError(f"env {name}: valueFrom {sorted(source)} is not emulated")


def field_value(pod: Pod, path: str) -> str:
    """A fieldRef's value (the downward API) for the paths the harness knows."""
    meta = pod.obj["metadata"]
    sandbox = pod.sandbox
    simple = {
        "metadata.name": pod.name,
        "metadata.namespace": pod.namespace,
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": "local",
        "spec.serviceAccountName": pod.spec.get("serviceAccountName", "default"),
        "status.podIP": sandbox.ip if sandbox else "",
        "status.hostIP": sandbox.host_ip if sandbox else "",
    }
    if path in simple:
        return simple[path]
    match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if match:
        return (meta.get(match.group(1)) or {}).get(match.group(2), "")
    raise HarnessError(f"fieldRef {path!r} is not emulated")
