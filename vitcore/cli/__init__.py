"""The command line: `vitcore train | bench | ab | report | plugins | env` (`commands`), its parsers
(`options`), each command's options as one typed object read from the namespace once and validated
on construction (`typed`), what else is checked before a run starts (`preflight`), the `--compare` gate flow
(`gating`) and the A/B mode (`ab`). `import vitcore.cli` loads neither torch nor matplotlib:
each command imports what it needs once its arguments are valid.
"""

from vitcore.cli.commands import main

__all__ = ["main", "ab", "commands", "gating", "options", "preflight", "typed"]
