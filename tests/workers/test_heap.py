"""mrepo.store.heap: glibc keeps freed blocks below the thresholds in the process."""

import platform
import resource

import pytest
import torch

from mrepo.store.heap import keep_freed_memory


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_freed_temporaries_are_reused_without_new_page_faults():
    assert keep_freed_memory() is True
    assert keep_freed_memory() is True  # once per process (cached)

    def cycle() -> None:
        x = torch.ones(48, 2**17, dtype=torch.float64)  # 48 MiB: above glibc's largest dynamic mmap threshold
        x.mul_(2)
        del x

    cycle()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        cycle()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    assert faults < 3 * 12288  # fresh mmaps fault every 4 KiB page of every cycle (20 x 12,288)


def test_release_free_heap_returns_freed_pages():
    """After a large heap block is freed (kept by keep_freed_memory's trim threshold), the trim gives it back."""
    import subprocess
    import sys

    code = ("import torch; from mrepo.store.heap import keep_freed_memory, release_free_heap\n"
            "def rss():\n    return int(next(l for l in open('/proc/self/status') if l.startswith('VmRSS')).split()[1])\n"
            "keep_freed_memory()\n"
            "xs = [torch.ones(8 << 20, dtype=torch.uint8) for _ in range(24)]\n"  # 24 x 8 MiB from the heap
            "del xs\n"
            "before = rss(); release_free_heap(); print(before - rss())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert int(out.strip()) > 64 * 1024  # kB: more than 64 MiB returned
