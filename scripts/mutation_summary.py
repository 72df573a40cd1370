"""Score per module from `mutmut results --all true` on stdin (scripts/mutation).

A mutant is caught when a test failed (killed) or hung (timeout); it got away
when every test passed (survived) or no test ran its code (no tests).  Mutants
named in the equivalents file (argument 1, docs/mutation.md: each named in
backquotes with the reason no test can tell it from the original) are left
out of the score; one listed there that was caught, or that no longer
exists, is reported so the list stays true.
"""

import collections
import os
import re
import sys

CAUGHT = {"killed", "timeout", "segfault"}
MISSED = {"survived", "no tests", "suspicious"}

equivalent: set[str] = set()
if len(sys.argv) > 1 and os.path.exists(sys.argv[1]):
    with open(sys.argv[1], encoding="utf-8") as f:
        equivalent = set(re.findall(r"`(procevents\.[^`\s]+__mutmut_\d+)`", f.read()))

counts: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
seen: dict[str, str] = {}
for line in sys.stdin:
    line = line.strip()
    if "__mutmut_" not in line or ": " not in line:
        continue
    name, status = line.rsplit(": ", 1)
    seen[name] = status
    module = ".".join(part for part in name.split(".") if not part.startswith("x"))  # x_func, xǁClassǁmethod
    if status in CAUGHT:
        counts[module]["caught" if name not in equivalent else "caught equivalent"] += 1
    elif status in MISSED:
        counts[module]["equivalent" if name in equivalent else "missed"] += 1
    else:
        counts[module]["unchecked"] += 1


def row(label: str, c: collections.Counter[str]) -> str:
    caught = c["caught"] + c["caught equivalent"]
    judged = caught + c["missed"]
    score = 100 * caught / judged if judged else 0.0
    return f"{label:28} {caught:7} {c['missed']:9} {c['equivalent']:11} {score:6.1f}%"


print(f"{'module':28} {'killed':>7} {'survived':>9} {'equivalent':>11} {'score':>7}")
total: collections.Counter[str] = collections.Counter()
for module, c in sorted(counts.items()):
    total.update(c)
    print(row(module, c))
print(row("all", total))
print("(killed: a test failed or timed out; survived: every test passed or none ran it, equivalents left out)")
if total["unchecked"]:
    print(f"{total['unchecked']} mutants not checked (mutmut stopped early?)")
stale = sorted(name for name in equivalent if seen.get(name) in CAUGHT)
gone = sorted(name for name in equivalent if name not in seen)
for name in stale:
    print(f"listed as equivalent but killed: {name}")
for name in gone:
    print(f"listed as equivalent but no longer a mutant: {name}")
