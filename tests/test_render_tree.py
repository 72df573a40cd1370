"""The tree view (render/tree.py): depth below init or a root, unseen
ancestors printed once, a reused ancestor pid shown again."""

from __future__ import annotations

import re

from helpers import TS

from procevents.events import (
    Exec,
    Exit,
    Lost,
)
from procevents.render.clock import Clock


def _pids(pid: int, ancestor_pids: list[int], roots: set[int] | None) -> list[int]:
    from procevents.proctable import Proc
    from procevents.render.tree import lineage_below

    return [p.pid for p in lineage_below(pid, [Proc(a, 0) for a in ancestor_pids], roots)]


def test_lineage_below_init_without_roots() -> None:
    assert _pids(500, [400, 300, 1], None) == [400, 300]  # two ancestors below init
    assert _pids(500, [400, 2], None) == [400]  # kthreadd ends it too
    assert _pids(500, [], None) == []


def test_lineage_below_a_root() -> None:
    assert _pids(300, [200, 100, 1], {300}) == []  # a root itself
    assert _pids(500, [400, 300, 1], {300}) == [400, 300]
    assert _pids(500, [400, 300, 1], {400}) == [400]
    assert _pids(500, [400, 1], {300}) == [400, 1]  # not below a root: all ancestors counted


def test_tree_prints_the_unseen_ancestors_once_then_indents_under_them() -> None:
    import io

    from procevents.pipeline import Output, TreeSink
    from procevents.proctable import Proc
    from procevents.render.tree import lineage_below

    shell = Proc(pid=40, ppid=1, start_ns=TS - 5 * 10**9, comm="bash", argv=["bash"])
    make = Proc(pid=50, ppid=40, start_ns=TS - 10**9, comm="make", argv=["make", "-j2"])
    table = {40: shell, 50: make}

    def ancestors(proc: Proc) -> list[Proc]:
        found = []
        parent = table.get(proc.ppid)
        while parent is not None:
            found.append(parent)
            parent = table.get(parent.ppid)
        return lineage_below(proc.pid, found, None)

    buf = io.BytesIO()
    sink = TreeSink(Output(buf), lineage=ancestors)
    cc = Proc(pid=60, ppid=50, start_ns=TS, comm="cc")
    ld = Proc(pid=61, ppid=50, start_ns=TS + 10, comm="ld")
    assert sink.emit(Exec(0, 1, TS + 1000, 60, 60), cc, {"cmdline": ["cc", "-c", "a.c"]})
    assert sink.emit(Exec(0, 2, TS + 2000, 61, 61), ld, {"cmdline": ["ld", "a.o"]})
    assert sink.emit(Exit(0, 3, TS + 3000, 60, 60, 1 << 8, 17, 50, 50), cc, {"duration": 0.25})
    assert not sink.emit(Exit(0, 4, TS + 4000, 99, 99, 0, 17, 1, 1), Proc(pid=99, ppid=1), {})  # never shown
    sink.output.flush()
    lines = buf.getvalue().decode().splitlines()
    stamp = r"\d{2}:\d{2}:\d{2}\.\d{3} "
    expected = [
        r"40 bash  \(ancestor\)$",
        r"  50 make -j2  \(ancestor\)$",
        r"    60 cc -c a\.c$",
        r"    61 ld a\.o$",  # its ancestors are on screen already
        r"    60 exit status 1 after 250\.0ms \[cc\]$",
    ]
    assert len(lines) == len(expected), lines
    for line, pattern in zip(lines, expected, strict=True):
        assert re.match(stamp + pattern, line), (line, pattern)
    # The ancestors' times are their starts (5 s and 1 s before), the others their events'.
    clock = Clock()
    assert [line[:12] for line in lines[:3]] == [clock.local_ms(TS - 5 * 10**9), clock.local_ms(TS - 10**9),
                                                 clock.local_ms(TS + 1000)]


def test_tree_shows_a_reused_ancestor_pid_again() -> None:
    from procevents.proctable import Proc
    from procevents.render.tree import TreeRenderer

    first = Proc(pid=40, ppid=1, start_ns=TS - 100, comm="sh")
    again = Proc(pid=40, ppid=1, start_ns=TS + 100, comm="sh")
    parent = {60: first, 70: again}
    tree = TreeRenderer(lineage=lambda proc: [parent[proc.pid]])
    one = tree.render(Exec(0, 1, TS, 60, 60), Proc(pid=60, ppid=40, start_ns=TS), {"cmdline": ["a"]})
    two = tree.render(Exec(0, 2, TS + 200, 70, 70), Proc(pid=70, ppid=40, start_ns=TS + 150), {"cmdline": ["b"]})
    assert one is not None and two is not None
    assert "40 [sh]  (ancestor)" in one and "40 [sh]  (ancestor)" in two  # another process under that pid
    three = tree.render(Exec(0, 3, TS + 300, 70, 70), Proc(pid=70, ppid=40, start_ns=TS + 150), {"cmdline": ["c"]})
    assert three is not None and "ancestor" not in three


def test_an_ancestors_command_line_is_cut_never_inside_an_escape_or_a_wide_character() -> None:
    from procevents.proctable import Proc
    from procevents.render.text import display_width
    from procevents.render.tree import CONTEXT_WIDTH, TreeRenderer

    for argv in (["sh", "-c", "printf " + "\x1b[31m" * 40], ["sh", "-c", "cat " + "日本語" * 40]):
        for shift in range(4):  # the cut at each place in an escape or a character
            ancestor = Proc(pid=40, ppid=1, start_ns=TS, argv=[argv[0], argv[1], "x" * shift + argv[2]])
            tree = TreeRenderer(lineage=lambda proc, a=ancestor: [a])  # type: ignore[misc]
            out = tree.render(Exec(0, 1, TS, 60, 60), Proc(pid=60, ppid=40, start_ns=TS), {"cmdline": ["a"]})
            assert out is not None
            line = out.splitlines()[0]
            command = line.split(" 40 ", 1)[1].removesuffix("  (ancestor)")
            assert command.endswith("...") and display_width(command) <= CONTEXT_WIDTH, command
            kept = command.removesuffix("...")
            escapes = re.compile(r"\\(?:x[0-9a-f]{2}|u[0-9a-f]{4}|U[0-9a-f]{8}|[\\nrt'])")
            assert "\\" not in escapes.sub("", kept), kept  # every escape whole


def test_a_loss_in_the_tree_has_its_running_total() -> None:
    from procevents.render.tree import TreeRenderer

    line = TreeRenderer(clock=Clock()).render(Lost(-1, 0, TS, 1, "drops"), None, {"total": 7})
    assert line is not None and line.endswith(" !! 1 event lost (drops, 7 in all)\n"), line
