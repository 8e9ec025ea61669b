"""`python -m crmctl`: the same CLI as the `crmctl` script (the wall screen runs it this way)."""

from __future__ import annotations

import sys

from crmctl.cli import main

if __name__ == "__main__":
    sys.exit(main())
