"""With a data-plane namespace configured, the agent creates it and runs haproxy inside it,
while the API stays in the agent's own namespace."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

pytestmark = pytest.mark.netns


def test_haproxy_runs_in_the_data_plane_namespace(agent_factory, lb_config):
    namespace = f"amphora-harness-{uuid.uuid4().hex[:8]}"
    agent = agent_factory(network_namespace=namespace)
    assert os.path.exists(f"/run/netns/{namespace}")  # created at agent start
    # The backend lives in the namespace too: haproxy there cannot reach our loopback.
    backend = subprocess.Popen(
        ["ip", "netns", "exec", namespace, sys.executable, "-m", "http.server", "--bind",
         "127.0.0.1", "8000"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        lb = lb_config(agent, 8000, port=8080)
        agent.client.upload_config(lb.lb_id, lb.text)
        agent.client.start(lb.lb_id)

        master = int((agent.base_path / lb.lb_id / f"{lb.lb_id}.pid").read_text())
        assert os.stat(f"/proc/{master}/ns/net").st_ino == os.stat(
            f"/run/netns/{namespace}").st_ino
        fetched = subprocess.run(
            ["ip", "netns", "exec", namespace, sys.executable, "-c",
             "import urllib.request, time\n"
             "for _ in range(50):\n"
             "    try:\n"
             "        print(urllib.request.urlopen('http://127.0.0.1:8080/', timeout=5)"
             ".status); break\n"
             "    except OSError: time.sleep(0.1)\n"],
            capture_output=True, text=True, timeout=30, check=True)
        assert fetched.stdout.strip() == "200"
        assert agent.client.get_listeners()[0]["status"] == "ACTIVE"
        assert agent.client.get_details()["networks"] == {}  # only lo in a fresh namespace

        agent.restart()  # the namespace exists already: adopted, not recreated
        assert agent.client.get_listeners()[0]["status"] == "ACTIVE"
        agent.client.stop(lb.lb_id)
    finally:
        backend.kill()
        backend.wait(10)
