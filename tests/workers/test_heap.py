"""mrepo.workers.heap: glibc keeps freed blocks below the thresholds in the process."""

import platform
import resource

import pytest
import torch

from mrepo.workers.heap import keep_freed_memory


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
