"""Devices by name, checked before any work: ``cpu``, ``cuda``, ``cuda:N`` (and ``mps`` where
Apple's backend is present).

A name torch does not know, a CUDA device on a machine without CUDA, or a device index beyond
those present is a ``ValueError`` that says which, instead of an error from deep inside the
first tensor moved there.

Imports: nothing of ``repsim`` (a leaf).
"""

from __future__ import annotations

import torch

__all__ = ["check_device"]


def check_device(name: str | torch.device, *, here: bool = True) -> torch.device:
    """The :class:`torch.device` called ``name``; ``ValueError`` unless it is a supported device
    and (``here=True``) this machine has it. ``here=False`` checks only the name, e.g. for a plan
    that will run elsewhere.

    Examples:
        >>> check_device("cpu")
        device(type='cpu')
        >>> check_device("gpu0")
        Traceback (most recent call last):
        ...
        ValueError: unknown device 'gpu0'; use cpu, cuda or cuda:N
    """
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {name!r}; use cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device {str(name)!r} is not supported; use cpu, cuda or cuda:N")
    if here:
        _check_present(device, name)
    return device


def _check_present(device: torch.device, name: str | torch.device) -> None:
    """ValueError unless this machine has ``device``."""
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {str(name)!r} is a CUDA device, but this machine has none (torch.cuda.is_available()"
                " is False); use cpu"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {str(name)!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {str(name)!r}: Apple's MPS backend is not available here; use cpu")
