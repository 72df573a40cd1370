"""Which container a process runs in, read from its cgroup path: pure.

Container runtimes name the cgroup of each container after its 64-hex id:
docker (``docker-ID.scope`` under systemd, ``/docker/ID`` with cgroupfs),
containerd's CRI plugin (``cri-containerd-ID.scope``), CRI-O
(``crio-ID.scope``) and podman (``libpod-ID.scope``, ``libpod-ID``); the
kubelet puts each pod under ``kubepods...pod<UID>`` (``_`` for ``-`` in
systemd slice names), where a container may also be a bare ``ID``.  The
same names appear in cgroup v1 and v2 paths.  The innermost match wins (a
container inside a container is the inner one); the monitors of a container
(``crio-conmon-ID``, ``libpod-conmon-ID``) are not the container.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

_NAMED: Final = re.compile(r"^(docker|cri-containerd|crio|libpod)-([0-9a-f]{64})(?:\.scope)?$")
_BARE: Final = re.compile(r"^[0-9a-f]{64}$")
_POD: Final = re.compile(
    r"(?:^|-)pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})(?:\.slice)?$"
)
_RUNTIMES: Final = {"docker": "docker", "cri-containerd": "containerd", "crio": "cri-o", "libpod": "podman"}


@dataclass(frozen=True, slots=True)
class Container:
    """A container id (64 hex digits), the runtime that named it (None: a
    bare id under kubepods, whose runtime the path does not tell), and the
    Kubernetes pod's uid (None outside a pod)."""

    id: str | None
    runtime: str | None
    pod_uid: str | None


@lru_cache(maxsize=4096)  # many processes share a few paths
def container_of(path: str | None) -> Container | None:
    """The container a cgroup path names, or None (a host process)."""
    if not path:
        return None
    found_id: str | None = None
    runtime: str | None = None
    pod: str | None = None
    kube = False
    previous = ""
    for part in path.split("/"):
        named = _NAMED.match(part)
        if named:
            found_id, runtime = named[2], _RUNTIMES[named[1]]
        elif _BARE.match(part) and (previous == "docker" or kube):
            found_id, runtime = part, "docker" if previous == "docker" else None
        elif part.startswith("kubepods"):
            kube = True
            pod_match = _POD.search(part)
            if pod_match:
                pod = pod_match[1].replace("_", "-")
        elif kube and part.startswith("pod"):
            pod_match = _POD.search(part)
            if pod_match:
                pod = pod_match[1].replace("_", "-")
        previous = part
    if found_id is None and pod is None:
        return None
    return Container(found_id, runtime, pod)


def container_fields(path: str | None) -> dict[str, str]:
    """The JSON keys a cgroup path adds: container_id, container_runtime,
    pod_uid (only those known)."""
    found = container_of(path)
    if found is None:
        return {}
    fields = {}
    if found.id is not None:
        fields["container_id"] = found.id
    if found.runtime is not None:
        fields["container_runtime"] = found.runtime
    if found.pod_uid is not None:
        fields["pod_uid"] = found.pod_uid
    return fields
