"""PING health monitors: the agent installs the external check Octavia's config names, and a
real haproxy in the data-plane namespace marks members up or down with it."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

from amphora_agent.ping_wrapper import install_ping_wrapper
from harness.model import loadbalancer as model
from harness.render.amphora_configs import AmphoraPaths, render_haproxy

pytestmark = pytest.mark.netns

# In a namespace with only loopback up, this address has no route: ping fails at once and no
# packet leaves the namespace.
UNROUTABLE = "198.19.255.1"


@pytest.fixture
def empty_namespace():
    name = f"amphora-harness-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
    yield name
    subprocess.run(["ip", "netns", "del", name], check=False)


def test_wrapper_answers_for_reachable_and_unreachable_servers(tmp_path: Path, empty_namespace):
    script = install_ping_wrapper(tmp_path)
    assert script.stat().st_mode & 0o111

    def check(address: str) -> int:
        return subprocess.run(
            ["ip", "netns", "exec", empty_namespace, str(script), "0.0.0.0", "80", address,
             "80"], timeout=10).returncode

    assert check("127.0.0.1") == 0
    assert check(UNROUTABLE) != 0
    assert check("::1") == 0


def test_haproxy_marks_members_with_the_ping_check(agent_factory):
    namespace = f"amphora-harness-{uuid.uuid4().hex[:8]}"
    agent = agent_factory(network_namespace=namespace)
    assert (agent.base_path / "ping-wrapper.sh").is_file()  # installed at agent start

    up = model.Member(address="127.0.0.1", port=8000)
    down = model.Member(address=UNROUTABLE, port=8000)
    pool = model.Pool(
        members=[up, down],
        health_monitor=model.HealthMonitor(type=model.MonitorType.PING, delay=1, timeout=1,
                                           max_retries=1, max_retries_down=1),
    )
    listener = model.Listener(protocol=model.ListenerProtocol.TCP, port=8443, pools=[pool],
                              default_pool_id=pool.id, connection_limit=100)
    lb = model.LoadBalancer(vip_address="127.0.0.1", listeners=[listener])
    paths = AmphoraPaths(base_path=str(agent.base_path), base_cert_dir=str(agent.cert_dir))
    agent.client.upload_config(lb.id, render_haproxy(lb, agent.amphora_id, paths))
    agent.client.start(lb.id)

    socket_path = paths.stats_socket(lb.id)
    statuses: dict[str, str] = {}
    for _ in range(50):  # bounded: 50 x 0.2 s
        answer = subprocess.run(["socat", "-", f"UNIX-CONNECT:{socket_path}"],
                                input="show stat\n", capture_output=True, text=True,
                                timeout=5).stdout
        statuses = {row.split(",")[1]: row.split(",")[17]
                    for row in answer.splitlines() if row and not row.startswith("#")}
        if statuses.get(up.id) == "UP" and statuses.get(down.id, "").startswith("DOWN"):
            break
        subprocess.run(["sleep", "0.2"], check=True)
    assert statuses.get(up.id) == "UP", statuses
    assert statuses.get(down.id, "").startswith("DOWN"), statuses
    agent.client.delete_lb(lb.id)
