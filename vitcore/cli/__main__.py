"""`python -m vitcore.cli`: the same as `vitcore` and `python -m vitcore`."""

import sys

from vitcore.cli.commands import main

if __name__ == "__main__":
    sys.exit(main())
