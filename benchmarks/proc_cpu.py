"""CPU seconds of processes from Linux ``/proc`` (user + system), for the benchmarks that measure
a server's work beside wall time; 0 where ``/proc`` is not readable."""

from __future__ import annotations

import os
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process so far."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / _TICK
    except (OSError, IndexError, ValueError):
        return 0.0


def child_pids(pid: int) -> list[int]:
    """The direct children of process ``pid`` (every thread's)."""
    out: list[int] = []
    try:
        for t in Path(f"/proc/{pid}/task").iterdir():
            out += [int(x) for x in (t / "children").read_text().split()]
    except (OSError, ValueError):
        pass
    return out


def tree_cpu_s(pid: int) -> float:
    """CPU seconds used so far by process ``pid`` and all its descendants."""
    total, todo, seen = 0.0, [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        total += cpu_seconds(p)
        todo += child_pids(p)
    return total
