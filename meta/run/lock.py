"""One writer per folder: an OS file lock held for the life of the process that writes.

``train``, ``snapshot`` and the reproduction's jobs that write into a run or snapshot folder hold
:class:`FolderLock` on it while they write. A second writer is refused at once with
:class:`FolderInUseError`, whose message names the holder's process ID and command.

The lock is ``fcntl.flock`` on ``FOLDER/.lock``. The kernel releases it when the holder's
process ends, however it ends (a crash, ``kill -9``), so a lock left by a killed process never
blocks a rerun: only a living process holds one. The file itself stays (it holds the last
holder's PID and command, for the message) and is harmless.

Imports: nothing of :mod:`meta` (the standard library only).
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
from pathlib import Path
from types import TracebackType

__all__ = ["LOCK_NAME", "FolderInUseError", "FolderLock"]

LOCK_NAME = ".lock"


class FolderInUseError(ValueError):
    """Another living process holds the folder's lock (the message names it)."""


class FolderLock:
    """An exclusive lock on ``folder`` (created if missing), as a context manager.

    Examples:
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> with FolderLock(folder, "train"):
        ...     FolderLock(folder, "snapshot").acquire()  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        meta.run.lock.FolderInUseError: '...' is in use by process ... (train): ...
    """

    def __init__(self, folder: str | os.PathLike[str], what: str) -> None:
        self.folder = Path(folder)
        self.what = what
        self._fd: int | None = None

    @property
    def path(self) -> Path:
        return self.folder / LOCK_NAME

    def acquire(self) -> FolderLock:
        """Take the lock or raise :class:`FolderInUseError` naming the holder (``ValueError`` if
        the folder cannot be created, e.g. it is a file)."""
        if self.folder.exists() and not self.folder.is_dir():
            raise ValueError(f"{str(self.folder)!r} exists and is not a folder")
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise FolderInUseError(
                f"{str(self.folder)!r} is in use by process {holder.get('pid', '?')} ({holder.get('what', '?')}):"
                f" {holder.get('command', '?')}. Wait for it to finish, stop it, or use another folder."
            ) from None
        os.ftruncate(fd, 0)
        record = {"pid": os.getpid(), "what": self.what, "command": " ".join(sys.argv)}
        os.write(fd, (json.dumps(record) + "\n").encode())
        self._fd = fd
        return self

    def release(self) -> None:
        """Give the lock back (the process's end does it too)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.release()


def _read_holder(fd: int) -> dict[str, object]:
    """The holder's record in the lock file (empty if it cannot be read)."""
    try:
        data = os.pread(fd, 4096, 0).decode("utf-8", errors="replace")
        record = json.loads(data or "{}")
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}
