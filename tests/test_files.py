"""Files procevents writes as root: no planted symlink followed, new files
0600, the database never used as an output.  Real files, a real CLI."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from conftest import NOBODY
from helpers import digest, needs_root, run_cli, skip_unless_connector

from procevents.files import UnsafePath, check_planted_link, open_append


def _shared_dir(tmp_path: Path) -> Path:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # as /tmp
    return shared


def _planted(shared: Path, target: Path, owner: int = NOBODY) -> Path:
    link = shared / "out"
    link.symlink_to(target)
    os.lchown(link, owner, owner)
    return link


@needs_root
def test_a_link_planted_by_another_user_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "precious"
    target.write_bytes(b"keep me\n")
    link = _planted(_shared_dir(tmp_path), target)
    with pytest.raises(UnsafePath):
        check_planted_link(str(link))
    with pytest.raises(UnsafePath):
        open_append(str(link))
    assert target.read_bytes() == b"keep me\n"


@needs_root
def test_our_own_links_and_private_directories_are_followed(tmp_path: Path) -> None:
    target = tmp_path / "target"
    mine = _planted(_shared_dir(tmp_path), target, owner=os.geteuid())
    check_planted_link(str(mine))  # owned by us
    private = tmp_path / "private"
    private.mkdir(mode=0o755)
    theirs = private / "out"
    theirs.symlink_to(target)
    os.lchown(theirs, NOBODY, NOBODY)
    check_planted_link(str(theirs))  # not a shared, sticky directory: the kernel follows it too
    with open_append(str(theirs)) as f:
        f.write(b"x")
    assert target.read_bytes() == b"x"


def test_new_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        with open_append(str(tmp_path / "new.jsonl")) as f:
            f.write(b"{}\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new.jsonl").stat().st_mode) == 0o600


@needs_root
@pytest.mark.parametrize(
    "command", [["-D", "0.2"], ["query"], ["record", "-D", "0.2"]], ids=["watch", "query", "record"]
)
def test_the_cli_refuses_a_planted_link(tmp_path: Path, command: list[str]) -> None:
    skip_unless_connector()
    db = tmp_path / "a.db"
    assert run_cli("record", "--db", str(db), "-D", "0.2", "-q").returncode == 0
    target = tmp_path / "precious"
    target.write_bytes(b"keep me\n")
    link = _planted(_shared_dir(tmp_path), target)
    if command[0] == "record":
        result = run_cli("record", "--db", str(link), *command[1:])
    else:
        result = run_cli(*command, *(["--db", str(db)] if command[0] == "query" else []), "-o", str(link))
    lines = result.stderr.decode().splitlines()
    # A runtime error (1), not a usage error (2): the options were good.
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert lines[0] == (
        f"procevents: error: refusing {link}: a symlink owned by uid 65534 in the shared directory "
        f"{link.parent}, not followed"
    )
    assert target.read_bytes() == b"keep me\n"


@pytest.mark.parametrize("command", ["query", "replay"])
def test_the_database_being_read_is_not_an_output(tmp_path: Path, command: str) -> None:
    skip_unless_connector()
    db = tmp_path / "a.db"
    assert run_cli("record", "--db", str(db), "-D", "0.2", "-q").returncode == 0
    before = digest(db)
    result = run_cli(command, "--db", str(db), "-o", str(db))
    assert result.returncode == 2, result.stderr
    assert result.stderr.decode().strip() == f"procevents: error: -o {db} is the database being read"
    assert digest(db) == before
