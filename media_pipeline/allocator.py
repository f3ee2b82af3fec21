"""Large image buffers reused by the next photo instead of faulted in again (glibc).

glibc hands a freed block over its mmap threshold (128 KiB at first, then the size of
the largest block freed so far) straight back to the kernel, and trims the top of the
heap past 128 KiB. Each photo's decode, resize and copy buffers then fault in again, page
by page: a fifth of a 12 MP photo's thumbnail time here, in the kernel. Keeping blocks
up to 32 MiB on the heap lets the next photo reuse them. A flow run is a process of its
own, so what is kept goes back to the system when the run ends.
"""

from __future__ import annotations

import ctypes
from functools import cache

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# glibc refuses an mmap threshold above 32 MiB on 64-bit systems.
LARGEST_KEPT_BLOCK = 32 * 1024 * 1024


@cache
def keep_freed_image_buffers() -> bool:
    """Tune glibc's malloc once per process; False where the C library is not glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(
        mallopt(M_MMAP_THRESHOLD, LARGEST_KEPT_BLOCK)
        and mallopt(M_TRIM_THRESHOLD, 4 * LARGEST_KEPT_BLOCK)
    )
