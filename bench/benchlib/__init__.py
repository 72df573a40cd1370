"""The benchmarks' shared code.  bench/burst.py, bench/suite.py and
bench/record_bench.py are scripts on top of it (options, the run procedure,
the report); the tests import it through one helper
(tests/helpers.py: ``bench_module``).  No script imports another.

One module per job:

* ``build``: bench/burst.c (the load generator) and bench/tiny.c compiled
  into bench/.build/, and burst's command line;
* ``host``: what /proc and /proc/net/netlink say about a process (CPU,
  memory, socket queue and drops, its tree, other subscribers), waiting for
  and stopping processes;
* ``connector``: a second proc-connector subscriber (acks, what the kernel
  delivered);
* ``outputs``: reading what each tool wrote (procevents' JSON, text view,
  tree and database, forkstat, extrace) and its loss notices;
* ``tracefs``: the kernel's own record of every fork, exec and exit
  (sched_process_* tracepoints), and placing timestamp-less lines on it;
* ``truth``: ground truth, and which of a tool's events it accounts for:
  burst's pid file on its own (``GroundTruth``), or lives bounded by the
  tracepoint record (``TracedTruth``, from the pid file or the make tree);
* ``tools``: the monitors suite.py compares: how each is started, checked,
  measured and stopped;
* ``loads``: suite.py's loads (burst, make) and the gate through which
  ``procevents trace`` runs one;
* ``startup``: start-up timings of procevents;
* ``table``: the text tables the scripts print.
"""

from __future__ import annotations


class BenchError(Exception):
    """The benchmark could not run (build failure, procevents misbehaving...)."""
