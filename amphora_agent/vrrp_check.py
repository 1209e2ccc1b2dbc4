"""keepalived's track script for haproxy: `python -m amphora_agent.vrrp_check BASE_PATH`.

Exits 0 only when every load balancer with an uploaded config has a haproxy answering on its
stats socket, so an amphora whose haproxy died gives the VIP up. A load balancer the controller
stopped through the API does not count (Octavia drops it from its check script on stop): its
haproxy is meant to be down. With no load balancer to check it fails too (as Octavia's check
does): an amphora that serves nothing must not hold the VIP. It reads the load balancers and
their desired state from disk at every run, so it never lags behind an upload, stop or delete.
"""

from __future__ import annotations

import sys
from pathlib import Path

from amphora_agent.config import AgentConfig
from amphora_agent.desired_state import DESIRED_STATE_FILE, STOPPED, DesiredState
from amphora_agent.haproxy import HaproxySupervisor, socket_command

SOCKET_TIMEOUT_S = 2.0


def haproxy_answers(stats_socket: Path) -> bool:
    try:
        return bool(socket_command(stats_socket, "show info", timeout=SOCKET_TIMEOUT_S).strip())
    except OSError:
        return False


def all_haproxies_answer(base_path: Path) -> bool:
    config = AgentConfig(amphora_id="vrrp-check", agent_server_ca=Path(),
                         agent_server_cert=Path(), base_path=base_path)
    supervisor = HaproxySupervisor(config)
    desired = DesiredState(base_path / DESIRED_STATE_FILE).load()["load_balancers"]
    lb_ids = [lb_id for lb_id in supervisor.lb_ids() if desired.get(lb_id) != STOPPED]
    if not lb_ids:
        return False
    for lb_id in lb_ids:
        stats_socket = supervisor.stats_socket(lb_id)
        if stats_socket is None or not haproxy_answers(stats_socket):
            print(f"haproxy of load balancer {lb_id} does not answer", file=sys.stderr)
            return False
    return True


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} BASE_PATH", file=sys.stderr)
        return 2
    return 0 if all_haproxies_answer(Path(argv[1])) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
