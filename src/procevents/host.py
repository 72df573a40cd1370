"""What this host's kernel and namespaces allow a subscriber."""

from __future__ import annotations

import os
import re
from typing import Final

from . import procfs

_INIT_USER_NS_INO: Final = 0xEFFFFFFD
_INIT_PID_NS_INO: Final = 0xEFFFFFFC
_KERNEL_FILTER_SINCE: Final = (6, 6)


def kernel_supports_filter(release: str | None = None) -> bool:
    """True on kernels (6.6+) that accept struct proc_input event masks."""
    match = re.match(r"(\d+)\.(\d+)", release or os.uname().release)
    return match is not None and (int(match[1]), int(match[2])) >= _KERNEL_FILTER_SINCE


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
