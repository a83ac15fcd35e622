"""`python -m vitcore`: the `vitcore` command where its script is not on PATH (an install with
`pip install --target`, a checkout on PYTHONPATH)."""

import sys

from vitcore.cli import main

if __name__ == "__main__":
    sys.exit(main())
