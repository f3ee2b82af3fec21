"""Peak memory of one piece of work, in the process that does it (Linux).

``ru_maxrss`` is no use in a child process: it starts at its parent's peak (kept across
fork and exec). Writing 5 to /proc/self/clear_refs resets the peak (VmHWM) instead.
"""

from __future__ import annotations

from pathlib import Path


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def reset_peak() -> int:
    """Reset the peak resident size to the current one; returns the current (KiB)."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_kib("VmRSS")


def peak_growth_mib(before_kib: int) -> float:
    return (_status_kib("VmHWM") - before_kib) / 1024
