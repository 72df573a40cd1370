"""Opening the files procevents writes, as root in a world-writable /tmp.

The kernel's fs.protected_symlinks rule (off on many containers and VMs)
refuses to follow a symlink in a sticky, world-writable directory unless the
follower or the directory's owner owns the link; procevents applies the same
rule itself before it writes, so nobody can aim root's writes elsewhere with
a planted link.  New files are created 0600: they hold every process's argv.
"""

from __future__ import annotations

import os
import stat
from typing import BinaryIO


class UnsafePath(OSError):
    """A path whose last link another user may have planted."""


def check_planted_link(path: str) -> None:
    """Raise UnsafePath if ``path`` is a symlink the protected_symlinks rule would refuse."""
    try:
        link = os.lstat(path)
    except OSError:
        return  # nothing there (yet): the open decides
    if not stat.S_ISLNK(link.st_mode):
        return
    parent = os.path.dirname(os.path.abspath(path))
    try:
        directory = os.stat(parent)
    except OSError:
        return
    sticky_and_open = directory.st_mode & stat.S_ISVTX and directory.st_mode & stat.S_IWOTH
    if sticky_and_open and link.st_uid not in (os.geteuid(), directory.st_uid):
        raise UnsafePath(
            0, f"{path}: a symlink owned by uid {link.st_uid} in the shared directory {parent}, not followed"
        )


def open_append(path: str) -> BinaryIO:
    """``path`` for appending, created 0600 if new, never through a planted link."""
    check_planted_link(path)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    return os.fdopen(fd, "ab")


def open_replace(path: str) -> BinaryIO:
    """``path`` emptied for writing, created 0600 if new, never through a planted link."""
    check_planted_link(path)
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CREAT | os.O_CLOEXEC, 0o600)
    return os.fdopen(fd, "wb")


def same_file(a: str, b: str) -> bool:
    """Do both paths name one file (after links)?  False if either is missing."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
