"""benchmarks/peak_memory.py: a block's peak memory, read in a process of its own."""
import os

import pytest
import torch

from benchmarks import peak_memory
from benchmarks.peak_memory import PeakMemory, in_fresh_process

MB = 2 ** 20
CPU = torch.device("cpu")


def floats(megabytes):
    """A tensor of `megabytes` MB with every page touched."""
    return torch.ones(megabytes * MB // 4)


def figures(peak):
    return peak.peak, peak.total, peak.method, peak.reliable


def measure_cpu_blocks():
    """In a fresh process: blocks that each hold 200 MB at their peak, measured as on Linux and
    as where /proc/self/clear_refs cannot be written."""
    held = floats(100)  # in use before and during the blocks: not theirs
    with PeakMemory(CPU) as large:
        block = floats(200)
        del block
    # Small tensors (below glibc's mmap threshold, raised by freeing an 8 MB one) come from the
    # heap; once freed, glibc keeps their pages (the last one pins the heap's top). A block that
    # allocates them again reuses those pages: its RSS would not grow without the trim.
    del held
    floats(8)
    chunks = [floats(2) for _ in range(100)]
    pin = floats(2)
    del chunks
    with PeakMemory(CPU) as refill:
        chunks = [floats(2) for _ in range(100)]
        del chunks
    peak_memory.CLEAR_REFS = "/nonexistent/clear_refs"
    with PeakMemory(CPU) as fallback:
        block = floats(200)
        del block
    return figures(large), figures(refill), figures(fallback), pin.numel()


def linux_with_clear_refs():
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


@pytest.fixture(scope="module")
def cpu_blocks():
    if not os.path.exists("/proc/self/status"):
        pytest.skip("needs /proc/self/status")
    return in_fresh_process(measure_cpu_blocks)


@pytest.mark.skipif(not linux_with_clear_refs(), reason="needs a writable /proc/self/clear_refs")
def test_cpu_peak_is_what_the_block_adds_even_on_reused_pages(cpu_blocks):
    large, refill = cpu_blocks[:2]
    for peak, total, method, reliable in (large, refill):
        assert method == "VmHWM after clear_refs" and reliable
        assert 195 * MB <= peak <= 215 * MB
        assert total > peak  # the process: Python and torch included
    # The held 100 MB was in use when the first block began: not counted.
    assert large[1] - large[0] > 100 * MB


def test_cpu_fallback_says_it_may_read_low(cpu_blocks):
    peak, _, method, reliable = cpu_blocks[2]
    assert not reliable and "clear_refs not writable" in method
    assert peak <= 215 * MB


def measure_cuda_block():
    device = torch.device("cuda")
    held = torch.ones(100 * MB // 4, device=device)
    with PeakMemory(device) as peak:
        block = torch.ones(200 * MB // 4, device=device)
        del block
    return figures(peak), held.numel()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_peak_is_what_the_block_allocates():
    (peak, total, method, reliable), _ = in_fresh_process(measure_cuda_block)
    assert reliable and method == "torch.cuda.max_memory_allocated"
    assert peak == 200 * MB and total >= 300 * MB
