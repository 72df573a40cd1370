"""Score per module from `mutmut results --all true` on stdin (scripts/mutation)."""

import collections
import sys

counts: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
for line in sys.stdin:
    line = line.strip()
    if "__mutmut_" not in line or ": " not in line:
        continue
    name, status = line.rsplit(": ", 1)
    module = ".".join(part for part in name.split(".") if not part.startswith("x"))  # x_func, xǁClassǁmethod
    counts[module][status] += 1


def row(label: str, c: collections.Counter[str]) -> str:
    judged = c["killed"] + c["survived"]
    score = 100 * c["killed"] / judged if judged else 0.0
    return f"{label:28} {c['killed']:7} {c['survived']:9} {c['no tests']:9} {score:6.1f}%"


print(f"{'module':28} {'killed':>7} {'survived':>9} {'no tests':>9} {'score':>7}")
total: collections.Counter[str] = collections.Counter()
for module, c in sorted(counts.items()):
    total.update(c)
    print(row(module, c))
print(row("all", total))
