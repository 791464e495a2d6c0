"""Progress that draws only on a terminal: one helper for every progress bar of the toolkit.

:func:`progress_bar` returns a :mod:`tqdm` bar when its stream (standard error by default) is a
terminal. When the stream is a file or a pipe (a log of a batch job, ``2> log.txt``), a bar
would write a carriage-return update many times a second; :func:`progress_bar` returns a
:class:`StageLine` instead, which writes **one line per stage**, when the stage ends::

    model A forward: 40/40 batch in 12.3s

Both have the part of tqdm's interface that loops need: iterate over it, or ``update(n)`` (or set ``n``),
``refresh()``, ``set_postfix(...)``, ``set_description(...)``, ``close()``, and use it as a context manager.
``enabled=False`` (``--no-progress``) shows nothing at all. ``repsim`` uses it for the forward
passes, the similarity loop and the snapshot tasks; ``meta`` may use it the same way.

Imports: nothing of ``repsim`` (tqdm only; a leaf).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from tqdm.auto import tqdm

__all__ = ["StageLine", "is_terminal", "progress_bar"]


def is_terminal(stream: Any) -> bool:
    """Whether ``stream`` is an open terminal (False for files, pipes, closed or odd streams)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


class StageLine:
    """A progress bar for streams that are not terminals: it counts silently and writes one line
    when the stage ends (:meth:`close`, the end of the iteration, or the end of a ``with``
    block): ``"{desc}: {n}/{total} {unit} in {seconds}s"`` plus the last postfix, if any
    (``initial``: steps already done before, e.g. by the run being resumed).

    Examples:
        >>> import io
        >>> log = io.StringIO()
        >>> sum(StageLine(range(3), desc="tasks", unit="task", stream=log, clock=lambda: 0.0))
        3
        >>> log.getvalue()
        'tasks: 3/3 task in 0.0s\\n'
    """

    def __init__(
        self,
        iterable: Iterable[Any] | None = None,
        *,
        desc: str = "",
        total: int | None = None,
        unit: str = "it",
        initial: int = 0,
        stream: TextIO | None = None,
        clock: Any = time.perf_counter,
    ) -> None:
        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.iterable, self.desc, self.total, self.unit = iterable, desc, total, unit
        self.n = initial
        self._stream, self._clock = stream, clock
        self._start = clock()
        self._postfix = ""
        self._closed = False

    def __iter__(self) -> Iterator[Any]:
        if self.iterable is None:
            raise TypeError("this progress line was made without an iterable: call update(n) instead")
        try:
            for item in self.iterable:
                yield item
                self.n += 1
        finally:
            self.close()

    def __len__(self) -> int:
        if self.total is None:
            raise TypeError("this progress line has no total")
        return self.total

    def __enter__(self) -> StageLine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        """Count ``n`` more steps."""
        self.n += n

    def refresh(self) -> None:
        """Nothing to redraw: the line is written when the stage ends (``n`` may be set directly)."""

    def set_description(self, desc: str, refresh: bool = True) -> None:
        """Rename the stage (the line says the last name)."""
        self.desc = desc

    def set_postfix(self, ordered_dict: Any = None, refresh: bool = True, **kwargs: Any) -> None:
        """Remember values to write after the count (``loss=0.31``), as tqdm shows them."""
        values = {**dict(ordered_dict or {}), **kwargs}
        self._postfix = ", ".join(f"{key}={value}" for key, value in values.items())

    def close(self) -> None:
        """Write the stage's line (once)."""
        if self._closed:
            return
        self._closed = True
        count = f"{self.n}/{self.total}" if self.total is not None else str(self.n)
        postfix = f" ({self._postfix})" if self._postfix else ""
        stream = self._stream if self._stream is not None else sys.stderr
        stream.write(f"{self.desc}: {count} {self.unit} in {self._clock() - self._start:.1f}s{postfix}\n")
        stream.flush()


def progress_bar(
    iterable: Iterable[Any] | None = None,
    *,
    desc: str = "",
    total: int | None = None,
    unit: str = "it",
    initial: int = 0,
    enabled: bool = True,
    stream: TextIO | None = None,
    **options: Any,
) -> Any:
    """A progress bar over ``iterable`` (or one to ``update`` by hand, with ``total``) that suits
    where it writes (``stream``, default ``sys.stderr``):

    - ``enabled=False``: a disabled tqdm bar, silent;
    - a terminal: a tqdm bar (``options`` go to :class:`tqdm.auto.tqdm`, e.g. ``leave=False``);
    - anything else: a :class:`StageLine`, one line when the stage ends.

    Examples:
        >>> import io
        >>> log = io.StringIO()  # not a terminal
        >>> for _ in progress_bar(range(1000), desc="forward", unit="batch", stream=log):
        ...     pass
        >>> log.getvalue().count("\\n"), log.getvalue().startswith("forward: 1000/1000 batch in ")
        (1, True)
        >>> for _ in progress_bar(range(3), desc="quiet", enabled=False, stream=log):
        ...     pass
        >>> log.getvalue().count("\\n")
        1
    """
    out = stream if stream is not None else sys.stderr
    if not enabled:
        return tqdm(iterable, desc=desc, total=total, unit=unit, initial=initial, disable=True, file=out, **options)
    if is_terminal(out):
        return tqdm(iterable, desc=desc, total=total, unit=unit, initial=initial, file=out, **options)
    return StageLine(iterable, desc=desc, total=total, unit=unit, initial=initial, stream=out)
