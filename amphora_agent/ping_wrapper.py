"""The external check that PING health monitors run.

Octavia's driver renders `external-check command {base_path}/ping-wrapper.sh` for PING monitors;
its amphora image ships that script. The agent installs its own at start, so any amphora running
this agent (a container, a namespace on a host) can serve PING monitors.
"""

from __future__ import annotations

from pathlib import Path

from amphora_agent.fsutil import atomic_write

# haproxy calls it with: <proxy address> <proxy port> <server address> <server port>.
# The server is healthy when it answers one echo request within a second. haproxy runs it
# with an empty PATH, hence the absolute path.
SCRIPT = """#!/bin/sh
case "$3" in
    *:*) family=-6 ;;
    *) family=-4 ;;
esac
exec /bin/ping "$family" -q -n -c 1 -W 1 "$3" >/dev/null 2>&1
"""


def install_ping_wrapper(base_path: Path) -> Path:
    path = base_path / "ping-wrapper.sh"
    if not path.is_file() or path.read_text() != SCRIPT:
        atomic_write(path, SCRIPT.encode(), mode=0o755)
    return path
