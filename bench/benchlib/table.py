"""The text tables the scripts print, and the median [min-max] cells of suite.py's."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def spread(values: Sequence[float | None], digits: int) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "-"
    med = statistics.median(vals)
    if len(vals) == 1:
        return f"{med:.{digits}f}"
    sep = " to " if min(vals) < 0 else "-"
    return f"{med:.{digits}f} [{min(vals):.{digits}f}{sep}{max(vals):.{digits}f}]"


def print_table(rows: list[list[str]], header: list[str], left: int = 1) -> None:
    """Columns before ``left`` are left-justified, the others right-justified."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)

    def fmt(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i < left else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    print(line)
    print(fmt(header))
    print(line)
    for r in rows:
        print(fmt(r))
    print(line)
