"""The amphora-harness command (harness.cli.main). Its console script enters through main() here,
which first checks that the harness extra is installed (harness.distribution): an agent-only
install gets a line saying what to install, not a traceback."""

from __future__ import annotations

import sys

from harness.distribution import INSTALL_HINT, missing_harness_requirements

MISSING_EXTRA_EXIT = 2


def main() -> int:
    missing = missing_harness_requirements()
    if missing:
        print(f"amphora-harness: the harness is not installed (missing {', '.join(missing)}): "
              f"{INSTALL_HINT}", file=sys.stderr)
        return MISSING_EXTRA_EXIT
    from harness.cli.main import main as run_command

    return run_command()
