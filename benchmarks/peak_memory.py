"""Peak memory of a block of work (a training step), and a fresh process to measure it in.

    with PeakMemory(device) as peak:
        step()
    peak.peak      # bytes the block added, at its worst, to what was in use when it began
    peak.total     # the process's (CPU) or the allocator's (CUDA) peak, all included
    peak.method    # how it was measured, in words (printed beside the figures)
    peak.reliable  # False when the figure may read low (the fallback): decide nothing on it

CUDA: torch.cuda.max_memory_allocated after reset_peak_memory_stats, less memory_allocated at
the start.

CPU (Linux): the kernel's high-water mark of the resident set. Writing "5" to
/proc/self/clear_refs resets VmHWM (in /proc/self/status) to the current RSS, so
`peak = VmHWM at the end - VmRSS at the reset`. The baseline is the RSS at the reset, taken after
`gc.collect()` and glibc's `malloc_trim(0)`: what the process holds between steps (Python, torch,
the frozen weights, the learner, the caches of an earlier warm-up step), with the heap pages that
freed tensors left behind handed back to the kernel. Without the trim the step would refill pages
that glibc kept from earlier work without raising the RSS, and the figure would read low (the
fault of an RSS sampled in one process for several candidates, which this replaces). The figure
is then what the block itself adds on top, at its worst, like CUDA's figure above; it counts
whole pages touched, so it can exceed the bytes allocated a little (alignment, fragmentation).

Measure each candidate in a process of its own (`in_fresh_process`), so that no candidate runs
on pages another one left behind. Where clear_refs cannot be written (not Linux, a locked-down
/proc), the fallback samples the RSS every millisecond in a thread, which can miss a short peak:
`method` says so and `reliable` is False. Nothing is measured without /proc at all.
"""
import ctypes
import ctypes.util
import gc
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor

CLEAR_REFS, STATUS = "/proc/self/clear_refs", "/proc/self/status"


def status_bytes(field):
    """A `kB` field of /proc/self/status (VmRSS, VmHWM), in bytes."""
    with open(STATUS) as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def trim_heap():
    """Free what Python can and hand the pages freed tensors left behind back to the kernel
    (glibc's malloc_trim); False where there is no malloc_trim (another C library)."""
    gc.collect()
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError, TypeError):
        return False
    trim(0)
    return True


def reset_high_water_mark():
    """Reset VmHWM to the current RSS; False where /proc/self/clear_refs cannot be written."""
    try:
        with open(CLEAR_REFS, "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


class PeakMemory:
    """See the module's docstring."""

    def __init__(self, device):
        self.device = device
        self.peak = self.total = None
        self.method, self.reliable = "not measured", False

    def __enter__(self):
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            self.method, self.reliable = "torch.cuda.max_memory_allocated", True
            return self
        if not os.path.exists(STATUS):
            self.method = "not measured: no /proc/self/status here"
            return self
        trimmed = trim_heap()
        if reset_high_water_mark():
            self.sampler = None
            self.method = "VmHWM after clear_refs"
            self.reliable = trimmed
            if not trimmed:
                self.method += " (no malloc_trim: may read low)"
        else:
            self.method = "RSS sampled every 1 ms (clear_refs not writable: may read low)"
            self.sampled, self.running = status_bytes("VmRSS"), True
            self.sampler = threading.Thread(target=self.sample, daemon=True)
            self.sampler.start()
        self.base = status_bytes("VmRSS")
        return self

    def sample(self):
        while self.running:
            self.sampled = max(self.sampled, status_bytes("VmRSS"))
            time.sleep(0.001)

    def __exit__(self, *exc):
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.total = torch.cuda.max_memory_allocated(self.device)
            self.peak = self.total - self.base
        elif self.method.startswith("VmHWM"):
            self.total = status_bytes("VmHWM")
            self.peak = self.total - self.base
        elif self.method.startswith("RSS sampled"):
            self.running = False
            self.sampler.join()
            self.total = max(self.sampled, status_bytes("VmRSS"))
            self.peak = self.total - self.base


def in_fresh_process(function, *args, **kwargs):
    """`function(*args, **kwargs)` run in a new process (spawned: nothing inherited from this
    one's heap), its result returned. `function` must be importable (defined at a module's top
    level). A process that dies (killed for memory, say) raises BrokenProcessPool."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args, **kwargs).result()
