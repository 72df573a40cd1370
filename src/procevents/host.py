"""What this host's kernel and namespaces allow a subscriber."""

from __future__ import annotations

import os
import re
from typing import Final

from . import procfs

_INIT_USER_NS_INO: Final = 0xEFFFFFFD
_INIT_PID_NS_INO: Final = 0xEFFFFFFC
_KERNEL_FILTER_SINCE: Final = (6, 6)
_UNPRIVILEGED_SINCE: Final = (6, 6)


def _at_least(version: tuple[int, int], release: str) -> bool:
    match = re.match(r"(\d+)\.(\d+)", release)
    return match is not None and (int(match[1]), int(match[2])) >= version


def kernel_supports_filter(release: str | None = None) -> bool:
    """True on kernels (6.6+) that accept struct proc_input event masks."""
    return _at_least(_KERNEL_FILTER_SINCE, release or os.uname().release)


#: Why a request sent from a non-initial network namespace is refused: the
#: kernel's connector socket exists only in the initial one (ECONNREFUSED).
NETWORK_NAMESPACE_PROBLEM: Final = (
    "running in a non-initial network namespace: the proc connector exists only in the host's, "
    "which refused the request; run procevents there"
)


def bind_refusal(release: str | None = None) -> str:
    """Why the kernel refused this process a place in the proc connector's
    group (EPERM on bind), once the namespaces are ruled out.  Whether it is
    refused was found by trying; the release only words the reason: upstream
    lets anyone join since 6.6, but a distribution build may not."""
    release = release or os.uname().release
    if _at_least(_UNPRIVILEGED_SINCE, release):
        return (
            f"this kernel ({release}) refuses unprivileged subscribers to the proc connector "
            "(upstream allows them since 6.6): run procevents as root or with CAP_NET_ADMIN"
        )
    return (
        f"kernels before 6.6 (this one is {release}) let only root or CAP_NET_ADMIN subscribe "
        "to the proc connector: run procevents as root (sudo)"
    )


def namespace_problem() -> str | None:
    """Why the kernel would silently ignore our subscription, or None.

    Events are reported relative to the initial user and pid namespaces and
    requests from any other are dropped without an answer.
    """
    for kind, init in (("user", _INIT_USER_NS_INO), ("pid", _INIT_PID_NS_INO)):
        inode = procfs.namespace_inode(kind)
        if inode is not None and inode != init:
            return (
                f"running in a non-initial {kind} namespace ({kind}:[{inode}]): the kernel "
                "ignores proc connector subscriptions from there; run procevents on the host"
            )
    return None
