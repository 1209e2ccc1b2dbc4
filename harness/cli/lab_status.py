"""What `amphora-harness status` reports about a standing lab: one structure (lab_status), shown
as a table or as JSON, and what in it is unhealthy (a node not running, an agent not answering).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from harness.amphora_api.client import AmphoraClient
from harness.lab.constants import AGENT_PORT
from harness.lab.lab import LabAmphora
from harness.lab.providers.base import Provider
from harness.lab.standing import StandingLab
from harness.lab.standing_state import LabRecord
from harness.observe.vip import answering_amphora

# status answers at once: an agent that does not answer within this is reported as such.
PROBE_CONNECT_S = 2.0
PROBE_READ_S = 5.0


def lab_status(record: LabRecord, provider: Provider) -> dict[str, Any]:
    """The lab's nodes, agents, load balancer and faults, and its problems (empty: healthy)."""
    with StandingLab(record, provider) as lab:
        url = lab.vip_url()
        answering = answering_amphora(url, lab.amphorae) if url else None
        amphorae = []
        for n, amphora in enumerate(lab.amphorae):
            running = provider.is_running(amphora.node)
            amphorae.append({
                "index": n, "name": _short(amphora.name, record), "id": amphora.id,
                "address": str(amphora.mgmt_address), "running": running,
                "carries_lb": n < record.lb_amphorae, "answers_on_vip": amphora is answering,
                "agent": _agent_status(amphora, record) if running else None,
            })
        members = [{"name": f"m{n}", "node": _short(m.name, record), "id": m.id,
                    "address": str(m.address), "running": provider.is_running(m.node)}
                   for n, m in enumerate(lab.members, start=1)]
    lb = record.load_balancer
    status = {
        "lab": record.lab_id, "provider": record.provider, "topology": record.topology,
        "agent": record.agent, "octavia_source": record.octavia_source,
        "vip": record.vip, "amphorae": amphorae, "members": members,
        "load_balancer": None if lb is None else {
            "id": lb.id, "source": lb.source,
            "urls": [lb.url(record.vip, item["port"]) for item in lb.listeners]},
        "faults": [{"kind": f.kind, "targets": f.targets} for f in record.faults],
    }
    status["problems"] = problems(status)
    status["healthy"] = not status["problems"]
    return status


def _agent_status(amphora: LabAmphora, record: LabRecord) -> dict[str, Any]:
    probe = AmphoraClient(str(amphora.mgmt_address), AGENT_PORT, amphora.id, record.driver,
                          connect_timeout=PROBE_CONNECT_S, read_timeout=PROBE_READ_S, retries=1)
    try:
        with probe:
            details = probe.get_details()
            listeners = sorted({item["status"] for item in probe.get_listeners()})
    except Exception as exc:  # status reports what it sees, whatever the agent does
        return {"answering": False, "error": type(exc).__name__}
    vrrp = None
    if details.get("topology") == "ACTIVE_STANDBY":
        vrrp = "MASTER" if details.get("active") else "BACKUP"
    return {"answering": True, "haproxy_version": details.get("haproxy_version"),
            "listeners": listeners, "vrrp": vrrp}


def problems(status: dict[str, Any]) -> list[str]:
    """What makes the lab unhealthy, one phrase each."""
    found = []
    for amphora in status["amphorae"]:
        if not amphora["running"]:
            found.append(f"amphora {amphora['index']} is not running")
        elif not amphora["agent"]["answering"]:
            found.append(f"the agent of amphora {amphora['index']} does not answer "
                         f"({amphora['agent']['error']})")
    found += [f"member {m['name']} is not running" for m in status["members"]
              if not m["running"]]
    return found


def status_table(status: dict[str, Any]) -> Table:
    table = Table(title=f"lab {status['lab']} — {status['topology']}, VIP {status['vip']}, "
                  f"{status['agent']} agent")
    for column in ("#", "node", "id", "address", "engine", "agent / service"):
        table.add_column(column)
    for amphora in status["amphorae"]:
        table.add_row(str(amphora["index"]), amphora["name"], amphora["id"][:8],
                      amphora["address"], _engine(amphora["running"]), _agent_summary(amphora))
    for member in status["members"]:
        table.add_row(member["name"], member["node"], member["id"][:8], member["address"],
                      _engine(member["running"]), "member")
    return table


def status_lines(status: dict[str, Any]) -> list[str]:
    """What follows the table: the load balancer, active faults, problems (rich markup)."""
    lb = status["load_balancer"]
    lines = ["no load balancer pushed (`amphora-harness push LB-FILE`)" if lb is None else
             f"load balancer {lb['id'][:8]} from {escape(Path(lb['source']).name)}: "
             f"{', '.join(lb['urls'])}"]
    lines += [f"[yellow]active fault[/]: {fault['kind']} on "
              f"{', '.join(t[:8] for t in fault['targets'])} (`amphora-harness heal`)"
              for fault in status["faults"]]
    lines += [f"[red]unhealthy[/]: {escape(problem)}" for problem in status["problems"]]
    return lines


def _short(node_name: str, record: LabRecord) -> str:
    return node_name.removeprefix(f"amphora-harness-{record.lab_id}-")


def _engine(running: bool) -> str:
    return "running" if running else "[red]stopped[/]"


def _agent_summary(amphora: dict[str, Any]) -> str:
    agent = amphora["agent"]
    if agent is None:
        return "-"
    if not agent["answering"]:
        return f"[red]agent not answering[/] ({agent['error']})"
    parts = [f"haproxy {agent['haproxy_version']}",
             f"listeners {', '.join(agent['listeners']) or 'none'}"]
    if agent["vrrp"]:
        parts.append(f"VRRP {agent['vrrp']}")
    if amphora["answers_on_vip"]:
        parts.append("[green]answers on the VIP[/]")
    if not amphora["carries_lb"]:
        parts.append("spare")
    return ", ".join(parts)
