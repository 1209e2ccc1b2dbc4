"""The external check that PING health monitors run.

Octavia's driver renders `external-check command /var/lib/octavia/ping-wrapper.sh` for PING
monitors (a fixed path, whatever base_path is); its amphora image ships that script. The agent
installs its own at start as {base_path}/ping-wrapper.sh: on every amphora of the lab (container
or namespace node) base_path is /var/lib/octavia, so that is the path Octavia's configs name.
An agent run with another base_path (the tests' agents on this host) serves the PING monitors of
configs that name its own base_path (as our renderer does), not Octavia's.
Octavia's script pings $HAPROXY_SERVER_ADDR with a 1 s deadline; ours pings the same address
(haproxy's third argument) and waits 1 s for the answer.
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
