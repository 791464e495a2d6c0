"""CPU settings that decide whether meta-learning on a CPU takes seconds or minutes.

Three settings matter on the project's CPUs (all measured, see ``benchmarks/README.md``):

- **Denormal floats.** Inner-loop gradients decay into the denormal range; without flushing them
  to zero (``torch.set_flush_denormal``) a MAML iteration can take a hundred times longer.
- **Intra-op threads.** On small shared machines one thread per process is both the fastest per
  core and the only reproducible choice for timing.
- **Returning freed memory to the system.** glibc serves allocations above its mmap threshold
  (128 KiB, adapted up to 32 MiB) with fresh ``mmap`` pages and gives them back on ``free``, so
  every activation tensor of every inner step page-faults its memory in again, which made the
  first convolution of conv4 (1 input channel, a large output) several times slower on the
  project's virtual machines. ``reuse_memory`` raises glibc's mmap and trim thresholds
  (``mallopt``) so that freed blocks stay in the heap and are reused.

Imports: nothing of :mod:`meta` except :mod:`meta.validation`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from dataclasses import asdict, dataclass

import torch

from meta.validation import check_int

# glibc's mallopt parameter numbers (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_KEEP_BYTES = 1 << 30  # freed blocks up to 1 GiB stay in the heap


@dataclass(frozen=True)
class CpuSettings:
    """What :func:`configure_cpu` applied (``memory_reused`` is False where glibc is absent)."""

    threads: int
    flush_denormal: bool
    memory_reused: bool

    def as_dict(self) -> dict[str, int | bool]:
        return asdict(self)


def _keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds; False where the C library is not glibc."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _KEEP_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD, _KEEP_BYTES))


def configure_cpu(threads: int | None = 1, flush_denormal: bool = True, reuse_memory: bool = True) -> CpuSettings:
    """Set the process-wide CPU settings for meta-learning (the trainer calls this by default).

    Args:
        threads: intra-op threads for torch (``torch.set_num_threads``); ``None`` leaves torch's
            choice alone.
        flush_denormal: flush denormal floats to zero (needs SSE3; a no-op elsewhere).
        reuse_memory: keep freed memory in the process heap instead of returning it to the
            system (glibc only; see the module docstring). It only changes thresholds, never
            frees or limits anything, and cannot be undone in a running process.

    Returns:
        The settings in force afterwards.
    """
    if threads is not None:
        torch.set_num_threads(check_int("threads", threads, minimum=1))
    flushed = bool(torch.set_flush_denormal(bool(flush_denormal))) and bool(flush_denormal)
    reused = _keep_freed_memory() if reuse_memory else False
    return CpuSettings(threads=torch.get_num_threads(), flush_denormal=flushed, memory_reused=reused)
