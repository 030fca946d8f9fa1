"""glibc malloc settings for training on the CPU: keep freed memory for the next step.

A training step on the CPU allocates and frees the same large blocks every step (a batch of
512 images through 16 channels at 32x32 is a 33 MB activation). By default glibc serves
every block over 32 MB with a fresh `mmap` and unmaps it when freed, so each step
page-faults its activations in again, zero-filled. With `mmap` off and the heap never
trimmed, freed blocks are reused. Measured by `python benchmarks/cpu_malloc.py` (R:L1+L3
w=0.25, 2 epochs on 5,000 images, 2 threads; medians of 3 rounds): 2.7 million minor faults
and 7.7 s of kernel time in 17.0 s of training by default, 0.29 million and 1.6 s in 14.0 s
with freed memory kept (a 0.82 time ratio). The price: the process keeps its peak heap until
it exits (+330 MB of peak RSS there), which a trainer, or a Ray worker that runs trial after
trial, needs again anyway.

Only the main thread's heap (glibc's main arena) can serve such blocks: other threads get
64 MB heaps, and anything bigger is mapped whatever the settings. So trials train on the
main thread of their Ray worker (`nas.trials.tune.TrialTrainable`), not in the side thread of
a function trainable, where the same training paid 4.6 million faults and 13.3 s of kernel
time and took 1.10x as long as on the main thread with glibc's defaults (same benchmark).

Set ``NAS_KEEP_FREED_MEMORY=0`` to leave glibc's defaults alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import platform

# mallopt(3) parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1  # free bytes at the top of the heap before it is given back to the system
_M_MMAP_MAX = -4  # how many blocks may be served by mmap at once (0: none, all from the heap)
_TRIM_THRESHOLD = 2**31 - 1  # bytes: the largest value mallopt's int takes (2 GiB)


def keep_freed_memory() -> bool:
    """Serve every block from the heap and keep freed memory for reuse (glibc only).

    Process-wide and idempotent; a no-op elsewhere and when ``NAS_KEEP_FREED_MEMORY=0``.

    Returns:
        Whether glibc took the settings.
    """
    if os.environ.get("NAS_KEEP_FREED_MEMORY", "1").strip() in ("0", "false", "no", "off"):
        return False
    mallopt = _mallopt()
    if mallopt is None:
        return False
    # mallopt returns 1 on success; the two are independent, both are needed for the effect
    return bool(mallopt(_M_MMAP_MAX, 0)) & bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))


@functools.cache
def _mallopt():
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return mallopt
