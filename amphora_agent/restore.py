"""Bringing the data plane back at agent start, without the controller.

After a reboot of the amphora every process is gone, the data-plane namespace with it, and the
cloud's ports are back in the default namespace unconfigured. A VM amphora recovers from that on
its own (its interface files and enabled services); so does this agent, before it serves: it
re-plugs the recorded ports, starts the load balancers the controller last wanted running, then
keepalived if it was started. What already runs is left alone, so an agent-only restart changes
nothing. A step that fails is logged and skipped: the agent serves anyway, and the controller can
still repair through the API.
"""

from __future__ import annotations

import logging

from amphora_agent.desired_state import DesiredState
from amphora_agent.haproxy import HaproxySupervisor
from amphora_agent.keepalived import KeepalivedSupervisor
from amphora_agent.plug import Plugger
from amphora_agent.vip_firewall import VipFirewall

LOG = logging.getLogger(__name__)


def restore_data_plane(plugger: Plugger, desired: DesiredState, haproxy: HaproxySupervisor,
                       keepalived: KeepalivedSupervisor, firewall: VipFirewall) -> None:
    # The firewall before the ports: an SR-IOV port must never be there unfiltered.
    reload_firewall(firewall)
    # Ports next: keepalived needs its interface, and a member network must be there for
    # haproxy's health checks.
    replug_ports(plugger)
    start_load_balancers(desired, haproxy)
    start_keepalived(desired, keepalived)


def reload_firewall(firewall: VipFirewall) -> None:
    try:
        firewall.reload()
    except Exception:
        LOG.exception("the VIP firewall rules could not be loaded again")


def replug_ports(plugger: Plugger) -> None:
    try:
        macs = plugger.ports_to_replug()
    except Exception:  # whatever is wrong here, the agent must still come up and serve
        LOG.exception("cannot tell which ports to plug again")
        return
    for mac in macs:
        try:
            ifname = plugger.replug(mac)
        except Exception:
            LOG.exception("port %s could not be plugged again", mac)
            continue
        LOG.info("port %s plugged again as %s", mac, ifname)


def start_load_balancers(desired: DesiredState, haproxy: HaproxySupervisor) -> None:
    for lb_id in desired.running_load_balancers():
        if not haproxy.exists(lb_id):
            LOG.warning("load balancer %s should run but has no config", lb_id)
        elif not haproxy.is_running(lb_id):
            try:
                haproxy.start(lb_id)
            except Exception:
                LOG.exception("haproxy of load balancer %s did not start", lb_id)
                continue
            LOG.info("load balancer %s started again", lb_id)


def start_keepalived(desired: DesiredState, keepalived: KeepalivedSupervisor) -> None:
    if not desired.keepalived_running() or keepalived.is_running():
        return
    if not keepalived.configured():
        LOG.warning("keepalived should run but has no config")
        return
    try:
        keepalived.start()
    except Exception:
        LOG.exception("keepalived did not start")
        return
    LOG.info("keepalived started again")
