"""The asyncio API against the real kernel."""

from __future__ import annotations

import asyncio

import procevents


async def _collect_lifecycle() -> list[procevents.Event]:
    seen: list[procevents.Event] = []
    async with procevents.alisten(events="fork,exec,exit") as stream:
        child = await asyncio.create_subprocess_exec("/bin/sh", "-c", "exit 7")
        async def reader() -> None:
            async for event in stream:
                if event.tgid == child.pid:
                    seen.append(event)
                    if isinstance(event, procevents.Exit) and event.pid == child.pid:
                        return
        await asyncio.wait_for(reader(), timeout=10)
        await child.wait()
    return seen


def test_async_for_yields_a_child_lifecycle() -> None:
    events = asyncio.run(_collect_lifecycle())
    assert [event.name for event in events] == ["fork", "exec", "exit"]
    exit_event = events[-1]
    assert isinstance(exit_event, procevents.Exit)
    assert exit_event.status == 7


async def _other_tasks_keep_running() -> int:
    ticks = 0
    stream = procevents.alisten(events="exec")

    async def ticker() -> None:
        nonlocal ticks
        for _ in range(5):
            await asyncio.sleep(0.01)
            ticks += 1

    async def waiter() -> None:
        async for _event in stream:
            break

    tick_task = asyncio.create_task(ticker())
    wait_task = asyncio.create_task(waiter())
    await tick_task  # runs while the stream waits: the loop is not blocked
    proc = await asyncio.create_subprocess_exec("/bin/true")
    await proc.wait()
    await asyncio.wait_for(wait_task, timeout=10)
    await stream.aclose()
    return ticks


def test_waiting_for_events_does_not_block_the_loop() -> None:
    assert asyncio.run(_other_tasks_keep_running()) == 5
