"""The C heap of a long-running process (glibc): keep freed memory for reuse (``mallopt``) and hand it
back on demand (``malloc_trim``). Refinement workers keep it for their many short-lived tensors of a few
MiB and hand it back before full-size grids; ``mrepo serve`` keeps it for the frames and buffers of
uploads and downloads (a fresh page costs the kernel a zero-fill, and on a virtual machine a fault in
the host too: 30-40 % of a server's CPU on a push of large arrays).

glibc serves allocations above its mmap threshold (128 KiB, raised dynamically up to 32 MiB) with
fresh ``mmap`` pages and returns them on free, so every evaluation of the target page-faults and
zero-fills its (P, g, big, big) temporaries again: 2.5-3.6 s of system time in a ~50 s ``mrepo
refine -n 2`` of bench_relion's data (box 48, 200 particles x 6 frames), 1.7 s with these defaults
(paired run: 50.2 -> 49.1 s CPU, peak RSS +43 MiB). Blocks up to ``mmap_mib`` come from the heap, and
up to ``trim_mib`` of free memory at its top is kept instead of being returned; larger arrays (maps,
back-projection grids) are still mapped and unmapped.
Both are no-ops where the C library lacks them (not glibc).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

__all__ = ["keep_freed_memory", "release_free_heap"]

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3


@functools.lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


@functools.lru_cache(maxsize=1)
def keep_freed_memory(mmap_mib: int = 64, trim_mib: int = 256) -> bool:
    """Set glibc's mmap and trim thresholds once per process; True where they were set."""
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, mmap_mib << 20) == 1
    ok &= mallopt(_M_TRIM_THRESHOLD, trim_mib << 20) == 1
    ok &= mallopt(_M_TOP_PAD, 16 << 20) == 1
    return bool(ok)


def release_free_heap() -> None:
    """Return the C heap's free pages to the system (``malloc_trim(0)``).

    Refinement frees many mid-sized tensors that glibc keeps in its heaps; the back-projection grids
    are mapped anew beside them, so without this the item's peak RSS is the retained heap plus the
    grids (box 128, 200 particles: 1,567 MiB before back-projection, 847 MiB after the trim)."""
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is not None:
        trim(0)
