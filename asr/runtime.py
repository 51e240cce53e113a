"""Process-wide runtime settings for CPU work: keep freed tensor memory instead of re-faulting it.

glibc returns large blocks to the kernel when they are freed: blocks above the mmap threshold
(which its dynamic rule caps at 32 MiB) are unmapped, and a heap top above the trim threshold
is released. A streaming step over 128 sessions, or a training batch, allocates convolution
activations of tens of MB several times per call; every call then page-faults them back in,
which on these machines cost more than the convolutions themselves (the subsampling of a
128-session streaming step went from about 700 ms to 250 ms on a busy 2-core machine when the
memory was kept). Raising both thresholds keeps the process at its peak working set, which is
what a long-running server or trainer wants anyway. ``ASR_KEEP_HEAP=0`` turns it off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1  # mallopt parameter numbers from glibc's malloc.h
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 1 << 30  # blocks up to 1 GiB come from the heap and are reused
_TRIM_THRESHOLD = (1 << 31) - 1  # mallopt takes an int: the largest value it can express
_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds once per process; False where that is not possible.

    Safe to call from every entry point (CLI, trainer, server, benchmarks): only the first call acts.
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get("ASR_KEEP_HEAP", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt  # glibc only: musl and others have no mallopt
    except (OSError, AttributeError):
        log.debug("no glibc mallopt here; freed memory is returned to the OS as usual")
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    _applied = bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)) and bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD))
    return _applied
