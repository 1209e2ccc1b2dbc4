"""An active/standby pair on one host: two real agents in two namespaces on a test-made VIP
network, real haproxy and real keepalived, a client namespace sending traffic to the VIP.

Exactly one amphora holds the VIP; killing its keepalived, or its haproxy while nothing starts it
again, moves the VIP (and the traffic) to the other one; a killed haproxy the agent starts again
keeps it where it is. The errors of the vrrp endpoints each have a negative test.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass

import psutil
import pytest

from amphora_agent.processes import alive
from harness.observe.heartbeats import HeartbeatReceiver
from harness.polling import poll_until
from tests.support.api_errors import expect_error
from tests.support.dataplane import ipv4_addresses
from tests.support.netns_lab import NetnsLab
from tests.support.vrrp_pair import (
    CLIENT,
    GATEWAY,
    SUBNET,
    VIP,
    VRRP_ID,
    VRRP_IPS,
    keepalived_config,
    start_pair,
)

pytestmark = pytest.mark.netns

LISTEN_PORT = 8080
FAILOVER_TIMEOUT_S = 40.0


@dataclass
class Amphora:
    name: str
    agent: object
    namespace: str

    def holds_vip(self) -> bool:
        return f"{VIP}/32" in ipv4_addresses(self.namespace, "eth1")

    def keepalived_pid(self) -> int:
        pid_file = self.agent.base_path / "vrrp" / "octavia-keepalived.pid"
        return int(pid_file.read_text().split()[0])


@dataclass
class Pair:
    lab: NetnsLab
    amphorae: tuple[Amphora, Amphora]
    lb_id: str
    client: str

    def holders(self) -> list[Amphora]:
        return [amphora for amphora in self.amphorae if amphora.holds_vip()]

    def wait_for_single_holder(self, not_this: Amphora | None = None) -> Amphora:
        """Wait until exactly one amphora (other than not_this) holds the VIP."""
        deadline = time.monotonic() + FAILOVER_TIMEOUT_S
        while time.monotonic() < deadline:
            holders = self.holders()
            if len(holders) == 1 and holders[0] is not not_this:
                return holders[0]
            time.sleep(0.2)
        pytest.fail(f"holders after {FAILOVER_TIMEOUT_S} s: {[a.name for a in self.holders()]}")

    def answer(self) -> str:
        return self.lab.http_get(self.client, f"http://{VIP}:{LISTEN_PORT}/")

    def wait_for_answer(self, name: str) -> str:
        deadline = time.monotonic() + FAILOVER_TIMEOUT_S
        answer = self.answer()
        while answer != name and time.monotonic() < deadline:
            time.sleep(0.2)
            answer = self.answer()
        return answer


@pytest.fixture
def pair(agent_factory, lab) -> Pair:
    lb_id, listener_id = str(uuid.uuid4()), str(uuid.uuid4())
    amphorae = [Amphora(node.name, node.agent, node.namespace)
                for node in start_pair(agent_factory, lab, lb_id, listener_id, LISTEN_PORT)]
    return Pair(lab, tuple(amphorae), lb_id, lab.add_client(CLIENT))


def test_exactly_one_holder_serves_the_vip(pair):
    holder = pair.wait_for_single_holder()
    # Stable: still exactly one a few advertisement intervals later.
    time.sleep(3)
    assert pair.holders() == [holder]
    assert pair.wait_for_answer(holder.name) == holder.name
    for amphora in pair.amphorae:
        details = amphora.agent.client.get_details()
        assert (details["topology"], details["topology_status"]) == ("ACTIVE_STANDBY", "OK")
        assert details["active"] is (amphora is holder)
    # A start of a running keepalived is a reload; the holder keeps the VIP.
    assert holder.agent.client.vrrp_action("start")["details"] == "keepalived reloaded"
    assert holder.agent.client.vrrp_action("reload")["details"] == "keepalived reloaded"
    time.sleep(2)
    assert pair.holders() == [holder]


def test_vip_moves_when_the_holders_keepalived_is_killed(pair):
    holder = pair.wait_for_single_holder()
    other = next(a for a in pair.amphorae if a is not holder)
    psutil.Process(holder.keepalived_pid()).send_signal(signal.SIGKILL)
    assert pair.wait_for_single_holder(not_this=holder) is other
    assert pair.wait_for_answer(other.name) == other.name
    details = holder.agent.client.get_details()
    assert (details["topology_status"], details["active"]) == ("ERROR", False)
    # Started again it comes back as backup (nopreempt): the VIP stays where it is.
    assert holder.agent.client.vrrp_action("start")["details"] == "keepalived started"
    time.sleep(4)
    assert pair.holders() == [other]


def test_start_clears_what_a_killed_keepalived_left_behind(pair):
    holder = pair.wait_for_single_holder()
    other = next(a for a in pair.amphorae if a is not holder)
    parent = psutil.Process(holder.keepalived_pid())
    orphans = parent.children()
    assert orphans, "keepalived --vrrp runs a VRRP child"
    # A killed keepalived's VRRP child lives on for a moment to give the VIP back, and on its
    # way out deletes the VRRP pid file; frozen, it stays in that moment for as long as we like.
    for orphan in orphans:
        orphan.suspend()
    parent.kill()
    # SIGKILL is delivered, not done: on a loaded host the parent may still look alive when
    # the next request arrives, and a start of a live keepalived is a reload.
    assert poll_until(lambda: not alive([parent]), 5.0), "SIGKILL did not end keepalived"
    assert holder.agent.client.vrrp_action("start")["details"] == "keepalived started"
    assert not alive(orphans)
    restarted = psutil.Process(holder.keepalived_pid())
    assert restarted.pid != parent.pid and restarted.children()
    assert (holder.agent.base_path / "vrrp" / "octavia-keepalived-vrrp.pid").is_file()
    assert holder.agent.client.get_details()["topology_status"] == "OK"
    assert pair.wait_for_single_holder(not_this=holder) is other


def _kill_haproxy(amphora, lb_id: str) -> int:
    master = psutil.Process(int(
        (amphora.agent.base_path / lb_id / f"{lb_id}.pid").read_text().split()[0]))
    for process in [master, *master.children()]:
        process.send_signal(signal.SIGKILL)
    return master.pid


def test_holders_killed_haproxy_is_started_again_and_the_vip_stays(pair):
    """As on Octavia's amphorae (systemd's Restart=always): the agent starts haproxy again
    within a check interval, so keepalived's check (interval 1, fall 2) never fails over."""
    holder = pair.wait_for_single_holder()
    pid_file = holder.agent.base_path / pair.lb_id / f"{pair.lb_id}.pid"
    old = _kill_haproxy(holder, pair.lb_id)

    def started_again() -> bool:
        try:
            pid = int(pid_file.read_text().split()[0])
            return pid != old and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except (OSError, ValueError, IndexError, psutil.Error):
            return False

    assert poll_until(started_again, 5.0)
    time.sleep(3)  # three check intervals
    assert pair.holders() == [holder]
    assert pair.wait_for_answer(holder.name) == holder.name


def test_vip_moves_when_the_holders_haproxy_stays_dead(pair):
    holder = pair.wait_for_single_holder()
    other = next(a for a in pair.amphorae if a is not holder)
    holder.agent.kill()  # nothing starts haproxy again now
    _kill_haproxy(holder, pair.lb_id)
    assert pair.wait_for_single_holder(not_this=holder) is other
    assert pair.wait_for_answer(other.name) == other.name
    # keepalived itself still runs on the old holder; only its check fails.
    holder.agent.start()
    assert holder.agent.client.get_details()["topology_status"] == "OK"


def test_stop_releases_the_vip(pair):
    holder = pair.wait_for_single_holder()
    assert holder.agent.client.vrrp_action("stop")["details"] == "keepalived stoped"
    assert pair.wait_for_single_holder(not_this=holder) is not holder
    assert not holder.holds_vip()


# --- errors ------------------------------------------------------------------------------------


@pytest.fixture
def plugged_agent(agent_factory, lab):
    agent = agent_factory(network_namespace=lab.namespace("amp"), topology="ACTIVE_STANDBY")
    agent.client.plug_vip(VIP, {"subnet_cidr": SUBNET, "gateway": GATEWAY,
                                "mac_address": lab.hot_plug().mac, "vrrp_ip": VRRP_IPS[0]})
    return agent


def test_unknown_action_is_400(plugged_agent):
    error = expect_error(400, "Invalid Request", plugged_agent.client.vrrp_action, "restart")
    assert "restart" in error.details


def test_start_without_a_config_is_500(plugged_agent):
    expect_error(500, "Failed to start keepalived service", plugged_agent.client.vrrp_action,
                 "start")


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda text: text.replace(f"virtual_router_id {VRRP_ID}",
                                               "virtual_router_id 300"),
                     id="vrid-out-of-range"),
        pytest.param(lambda text: text.replace("interface eth1", "interface eth7"),
                     id="no-such-interface"),
        pytest.param(lambda text: text.replace("vrrp_instance", "vrrp_instanse"),
                     id="unknown-keyword"),
        pytest.param(lambda text: text + "vrrp_instance x {\n", id="unbalanced-braces"),
    ],
)
def test_rejected_upload_changes_nothing(plugged_agent, mangle):
    agent = plugged_agent
    good = keepalived_config(agent.base_path, VRRP_IPS[0], VRRP_IPS[1], priority=100)
    agent.client.upload_vrrp_config(good)
    config_file = agent.base_path / "vrrp" / "octavia-keepalived.conf"
    before = config_file.read_bytes()
    error = expect_error(400, "Invalid request", agent.client.upload_vrrp_config, mangle(good))
    assert error.details  # keepalived's own complaint
    assert config_file.read_bytes() == before
    assert [p.name for p in config_file.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_upload_returns_md5_etag(plugged_agent):
    agent = plugged_agent
    good = keepalived_config(agent.base_path, VRRP_IPS[0], VRRP_IPS[1], priority=100)
    response = agent.client.request("PUT", "/1.0/vrrp/upload", data=good.encode())
    assert response.status_code == 200
    assert response.headers["ETag"] == hashlib.md5(good.encode()).hexdigest()


def test_keepalived_survives_an_agent_restart(pair):
    holder = pair.wait_for_single_holder()
    pid = holder.keepalived_pid()
    holder.agent.restart()
    assert holder.keepalived_pid() == pid and psutil.pid_exists(pid)
    details = holder.agent.client.get_details()
    assert (details["topology_status"], details["active"]) == ("OK", True)
    # The restarted agent finds it: a start is a reload, not a second keepalived.
    assert holder.agent.client.vrrp_action("start")["details"] == "keepalived reloaded"
    assert holder.keepalived_pid() == pid


def test_no_heartbeat_while_configured_keepalived_is_down(agent_factory, lab):
    """As Octavia's amphorae: silence makes the controller fail the amphora over."""
    with HeartbeatReceiver("vrrp-key") as receiver:
        host, port = receiver.address
        agent = agent_factory(network_namespace=lab.namespace("amp"), topology="ACTIVE_STANDBY",
                              controllers=[f"{host}:{port}"], heartbeat_interval=0.3,
                              heartbeat_key="vrrp-key")
        agent.client.plug_vip(VIP, {"subnet_cidr": SUBNET, "gateway": GATEWAY,
                                    "mac_address": lab.hot_plug().mac, "vrrp_ip": VRRP_IPS[0]})
        receiver.wait_for(agent.amphora_id, count=2, timeout=20)
        agent.client.upload_vrrp_config(
            keepalived_config(agent.base_path, VRRP_IPS[0], VRRP_IPS[1], priority=100))
        time.sleep(1)  # a tick in flight when the config landed may still arrive
        silent_since = time.time()
        time.sleep(2)
        assert receiver.history(agent.amphora_id).latest().received_at < silent_since
        agent.client.vrrp_action("start")
        receiver.wait_for(agent.amphora_id, count=2, after=time.time(), timeout=20)


def test_check_ignores_load_balancers_stopped_through_the_api(agent_factory, lb_config,
                                                               http_backend):
    """The track script: every haproxy meant to run must answer; one the controller stopped is
    not counted, one that died is."""
    agent = agent_factory()
    configs = [lb_config(agent, http_backend.port) for _ in range(2)]
    for lb in configs:
        agent.client.upload_config(lb.lb_id, lb.text)
        agent.client.start(lb.lb_id)

    def check() -> int:
        return subprocess.run([sys.executable, "-m", "amphora_agent.vrrp_check",
                               str(agent.base_path)], capture_output=True, timeout=30).returncode

    assert check() == 0
    agent.client.stop(configs[0].lb_id)
    assert check() == 0
    master = int((agent.base_path / configs[1].lb_id / f"{configs[1].lb_id}.pid").read_text())
    # The agent would start a dead haproxy again at once: stopped first, so that this one
    # stays dead while the check looks.
    agent.kill()
    os.kill(master, signal.SIGKILL)
    assert check() == 1
    agent.start()  # starts what should run
    assert check() == 0
    agent.client.stop(configs[1].lb_id)
    assert check() == 1  # nothing left to serve: must not hold the VIP
