"""``python -m meta``: see :mod:`meta.cli`.

Imports: :mod:`meta.cli` only.
"""

from __future__ import annotations

import sys

from meta.cli import main

if __name__ == "__main__":
    sys.exit(main())
