"""The errors of meta-RL that name a problem of the setup rather than of the code: a missing
optional dependency and a diverged simulation.

Imports: nothing.
"""

from __future__ import annotations

__all__ = ["DivergedError", "MissingExtraError"]


class MissingExtraError(ImportError, ValueError):
    """An optional dependency (the ``rl`` extra: ``mujoco``, ``gymnasium``) is not installed; the
    message says what to install. A ``ValueError`` too, so that the command line reports it as bad
    input (exit status 2) instead of a traceback."""


class DivergedError(ValueError):
    """A simulation produced a NaN or infinite observation or reward, or MuJoCo reset a diverged
    state; the message names the environment and where."""
