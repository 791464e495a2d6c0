"""``python -m repsim``: see :mod:`repsim.cli`.

Imports: :mod:`repsim.cli` only.
"""

from __future__ import annotations

from repsim.cli import main

raise SystemExit(main())
