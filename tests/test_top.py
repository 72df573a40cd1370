"""procevents top: q quits and the terminal is given back as it was on every
way out (on a real pseudo-terminal); rates over a sliding window."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import termios
from collections.abc import Iterator

import pytest
from helpers import Lines, cli_argv, env, skip_unless_connector, wait_until

from procevents.events import Exec, Exit, Fork
from procevents.top import TopModel


class OnTerminal:
    """procevents top with a pseudo-terminal as its stdin and stdout."""

    def __init__(self, *args: str) -> None:
        self.master, self.slave = os.openpty()
        self.before = termios.tcgetattr(self.slave)
        self.proc = subprocess.Popen(
            [*cli_argv(), "top", *args], stdin=self.slave, stdout=self.slave, stderr=subprocess.PIPE,
            env={**env(), "TERM": "xterm", "COLUMNS": "120", "LINES": "40"}, start_new_session=True,
        )
        assert self.proc.stderr is not None
        self.err = Lines(self.proc.stderr)
        self.screen = b""

    def read_screen(self) -> bytes:
        while select.select([self.master], [], [], 0)[0]:
            try:
                self.screen += os.read(self.master, 65536)
            except OSError:
                break
        return self.screen

    def wait_listening(self) -> None:
        # The screen is read meanwhile: a full terminal would hold top's writes.
        # (rich shows the notices above the frame, on the terminal.)
        def ready() -> bool:
            screen = self.read_screen()
            return b"q: quit" in screen and b"procevents: listening" in screen

        wait_until(ready, "the first frame and the listening notice")

    def cbreak(self) -> bool:
        return not termios.tcgetattr(self.slave)[3] & termios.ICANON

    def restored(self) -> bool:
        return termios.tcgetattr(self.slave) == self.before

    def wait(self) -> int:
        wait_until(lambda: self.read_screen() is not None and self.proc.poll() is not None, "top's end")
        self.err.join()
        return self.proc.wait()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.wait()
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def terminal() -> Iterator[list[OnTerminal]]:
    pytest.importorskip("rich")
    skip_unless_connector()
    started: list[OnTerminal] = []
    yield started
    for t in started:
        t.close()


def test_q_quits_and_gives_the_terminal_back(terminal: list[OnTerminal]) -> None:
    t = OnTerminal("--interval", "0.2")
    terminal.append(t)
    t.wait_listening()
    assert t.cbreak()  # one key at a time, while it runs
    os.write(t.master, b"q")
    assert t.wait() == 0, t.err.text
    assert t.restored()
    assert "Traceback" not in t.err.text


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name)
def test_an_ending_signal_gives_the_terminal_back(terminal: list[OnTerminal], sig: signal.Signals) -> None:
    t = OnTerminal("--interval", "0.2")
    terminal.append(t)
    t.wait_listening()
    t.proc.send_signal(sig)
    assert t.wait() == 0, t.err.text
    assert t.restored()


def test_a_signal_while_starting_gives_the_terminal_back(terminal: list[OnTerminal]) -> None:
    t = OnTerminal("--interval", "0.2")
    terminal.append(t)
    # As soon as the terminal is in cbreak mode: before the main loop handles signals.
    wait_until(t.cbreak, "cbreak mode", every=0.001)
    t.proc.send_signal(signal.SIGTERM)
    assert t.wait() in (0, -signal.SIGTERM), t.err.text
    assert t.restored()


def test_rates_are_over_the_window_not_the_whole_run() -> None:
    model = TopModel()
    for second in range(61):  # a minute of nothing, a frame each second
        frame = model.frame(float(second), window=5.0)
        assert frame.rate == 0.0
    for n in range(50):  # then a burst of 50 execs of one command
        model(Fork(0, n, 0, 10, 10, 100 + n, 100 + n), None, {"comm": "make"})
        model(Exec(0, n, 0, 100 + n, 100 + n), None, {"comm": "cc"})
        model(Exit(0, n, 0, 100 + n, 100 + n, 256, 17, 10, 10), None, {"comm": "cc"})
    frame = model.frame(61.0, window=5.0)
    assert frame.elapsed == 5.0
    assert frame.rates["exec"] == 10.0  # 50 in the last 5 s, not 50 in 61 s
    (cc,) = [s for s in frame.spawners if s.command == "cc"]
    assert (cc.execs, cc.execs_rate, cc.failures_rate) == (50, 10.0, 10.0)
    # The burst stays in view for the whole window, then leaves it.
    assert model.frame(64.0, window=5.0).rates["exec"] == 10.0
    assert model.frame(67.0, window=5.0).rates["exec"] == 0.0
    assert model.frame(67.0, window=5.0).totals["exec"] == 50


def test_rates_just_after_the_start_are_over_the_time_so_far() -> None:
    model = TopModel()
    model.frame(100.0)
    for n in range(4):
        model(Exec(0, n, 0, 5, 5), None, {"comm": "x"})
    frame = model.frame(102.0)
    assert frame.elapsed == 2.0 and frame.rates["exec"] == 2.0


def test_the_heaviest_exited_processes_are_kept_and_shown() -> None:
    from rich.console import Console

    from procevents.top import HEAVIEST, render

    model = TopModel()
    for n in range(20):  # CPU n/10 s each; the last ones are the heaviest
        info = {"comm": f"job{n}", "utime": n / 20, "stime": n / 20, "max_rss": (n + 1) << 20}
        model(Exit(0, n, 0, 200 + n, 200 + n, 0, 17, 10, 10), None, info)
    model(Exit(0, 99, 0, 300, 300, 0, 17, 10, 10), None, {"comm": "unknown-cost", "utime": None, "stime": None})
    frame = model.frame(1.0)
    assert [h.pid for h in frame.heaviest] == [219, 218, 217, 216, 215][:HEAVIEST]
    assert frame.heaviest[0].cpu == pytest.approx(1.9) and frame.heaviest[0].max_rss == 20 << 20
    console = Console(width=100, record=True, color_system=None)
    console.print(render(frame))
    text = console.export_text()
    assert "most CPU (exited)" in text and "job19" in text and "1.900s" in text and "job14" not in text
