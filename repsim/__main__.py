"""``python -m repsim``: see :mod:`repsim.cli`."""

from __future__ import annotations

from repsim.cli import main

raise SystemExit(main())
