"""procevents.costs: a record's figures, a process's from its threads', and
the join of records to exits (pure: records made here, no socket)."""

from __future__ import annotations

from procevents.costs import PENDING_TTL_NS, CostJoin, TaskCost, adjusted_cpu, exit_cpu, whole_process


def _cost(pid: int, elapsed: float | None = 0.01, utime: float = 0.0, **more: object) -> TaskCost:
    fields: dict[str, object] = dict.fromkeys(TaskCost.__dataclass_fields__)
    fields.update({"pid": pid, "thread_group": False, "version": 16, "elapsed": elapsed, "utime": utime,
                   "stime": 0.0, **more})
    return TaskCost(**fields)  # type: ignore[arg-type]


def test_join_takes_each_pid_in_arrival_order() -> None:
    join = CostJoin()
    first, second = _cost(7, utime=1.0), _cost(7, utime=2.0)
    join.add([first, _cost(8)], received_ns=1_000)
    join.add([second], received_ns=2_000)
    assert join.take(7, start_ns=500, end_ns=900) is first
    assert join.take(7, start_ns=1_500, end_ns=1_900) is second
    assert join.take(7, start_ns=1_500, end_ns=1_900) is None
    assert join.take(9, start_ns=None, end_ns=1) is None
    assert len(join) == 1 and join.joined == 2


def test_a_record_read_before_a_life_began_is_never_its() -> None:
    join = CostJoin()
    stale = _cost(7, utime=5.0)  # an earlier task 7 whose exit event never came
    join.add([stale], received_ns=1_000)
    fresh = _cost(7, utime=0.1)
    join.add([fresh], received_ns=3_000)
    assert join.take(7, start_ns=2_000, end_ns=2_900) is fresh
    assert join.unmatched == 1


def test_a_record_longer_than_the_life_is_another_tasks() -> None:
    join = CostJoin()
    join.add([_cost(7, elapsed=5.0)], received_ns=10)
    # a life of 1 s cannot have a record of 5 s: left unknown, not misattributed
    assert join.take(7, start_ns=0, end_ns=1_000_000_000) is None
    join.add([_cost(7, elapsed=1.04)], received_ns=20)
    assert join.take(7, start_ns=0, end_ns=1_000_000_000) is not None  # within the fork stamp's slack


def test_unknown_start_takes_the_oldest() -> None:
    join = CostJoin()
    join.add([_cost(7, utime=1.0), _cost(7, utime=2.0)], received_ns=10)
    taken = join.take(7, start_ns=None, end_ns=20)
    assert taken is not None and taken.utime == 1.0


def test_thread_group_aggregates_are_not_offered_to_exits() -> None:
    join = CostJoin()
    join.add([_cost(7, thread_group=True)], received_ns=10)
    assert join.take(7, start_ns=None, end_ns=20) is None and len(join) == 0


def test_records_nobody_claims_expire() -> None:
    join = CostJoin()
    join.add([_cost(7), _cost(8)], received_ns=0)
    join.add([_cost(9)], received_ns=PENDING_TTL_NS)
    assert join.expire(PENDING_TTL_NS - 1) == 0
    assert join.expire(PENDING_TTL_NS + 1) == 2
    assert len(join) == 1 and join.unmatched == 2
    assert join.expire(2 * PENDING_TTL_NS + 1) == 1 and len(join) == 0


def test_a_process_sums_its_threads_and_keeps_the_peak_memory() -> None:
    leader = _cost(10, utime=1.0, stime=0.5, max_rss=100, rchar=1, wchar=2, read_bytes=3, write_bytes=4)
    threads = [
        _cost(11, utime=2.0, stime=0.25, max_rss=300, rchar=10, wchar=20, read_bytes=30, write_bytes=40),
        _cost(12, utime=0.5, stime=0.25, max_rss=200, rchar=None),
    ]
    whole = whole_process(leader, threads)
    assert (whole.pid, whole.utime, whole.stime, whole.max_rss) == (10, 3.5, 1.0, 300)
    assert (whole.rchar, whole.wchar, whole.read_bytes, whole.write_bytes) == (11, 22, 33, 44)
    assert whole.cpu == 4.5
    assert whole_process(leader, []) is leader


def test_a_process_waited_what_its_longest_waiting_thread_did() -> None:
    """Threads wait side by side: 300 threads of a 0.2 s process, each
    0.2 s on the run queue, did not make it wait 60 s (the sum did)."""
    leader = _cost(10, cpu_delay=0.2, io_delay=0.0, mem_delay=None)
    threads = [_cost(11 + i, cpu_delay=0.2 - i / 10_000, io_delay=i / 1000, mem_delay=None) for i in range(300)]
    whole = whole_process(leader, threads)
    assert (whole.cpu_delay, whole.io_delay, whole.mem_delay) == (0.2, 0.299, None)


def test_cpu_time_is_the_schedulers_exact_runtime_split_as_the_ticks_saw_it() -> None:
    assert adjusted_cpu(300_000, 100_000, 800_000_000) == (0.6000000000000001, 0.2)
    assert adjusted_cpu(0, 0, 5_000_000) == (0.005, 0.0)  # ran between ticks: all user, as the kernel
    assert adjusted_cpu(0, 4_000, 5_000_000) == (0.0, 0.005)
    assert adjusted_cpu(4_000, 8_000, None) == (0.004, 0.008)  # no runtime: the ticks as they are


def test_an_exits_cpu_is_user_plus_system_or_unknown() -> None:
    assert exit_cpu({"utime": 0.25, "stime": 0.5}) == 0.75
    assert exit_cpu({"utime": 0.25, "stime": None}) is None
    assert exit_cpu({"comm": "sh"}) is None


def test_threads_not_taken_yet_are_offered_to_their_process() -> None:
    join = CostJoin()
    early, late, other = _cost(11, tgid=10), _cost(12, tgid=10), _cost(21, tgid=20)
    stale = _cost(13, tgid=10)  # a thread of an earlier process 10
    join.add([stale], received_ns=5)
    join.add([early, late, other, _cost(10, tgid=10)], received_ns=100)
    assert join.take(11, start_ns=50, end_ns=150) is early  # its exit event came: no longer offered
    assert join.threads_of(10, start_ns=50) == [late]
    assert join.threads_of(10, start_ns=None) == [stale, late]
    assert join.threads_of(30, start_ns=None) == []
    assert join.take(12, start_ns=60, end_ns=150) is late
    assert join.threads_of(10, start_ns=50) == []
    join.expire(PENDING_TTL_NS + 200)  # the stale thread's and the others' records go
    assert join.threads_of(10, start_ns=None) == [] and len(join) == 0
