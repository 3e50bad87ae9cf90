"""``python -m vigil``: the ``vigil`` command (for hosts where the script is not on PATH)."""

import sys

from vigil.cli import main

if __name__ == "__main__":
    sys.exit(main())
