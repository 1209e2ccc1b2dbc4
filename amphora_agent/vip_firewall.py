"""The VIP firewall of SR-IOV load balancers: nftables rules in the data-plane namespace.

A VIP port with vnic_type direct bypasses the cloud's security groups, so Octavia's driver asks
the amphora to filter instead: plugging such a port (`is_sriov`) installs a ruleset that drops
every packet arriving in the data-plane namespace, and `PUT /1.0/interface/{ip}/rules` then
opens what the listeners need (protocol, port, allowed source CIDR; VRRP from the peer).

The ruleset lives in {base_path}/nftables-vip.rules (Octavia's file name) and is the only
truth: it is written atomically after `nft -c` accepted it, then loaded with `nft -f`, which
replaces the table in one kernel transaction, so the amphora is never open in between. After
a reboot the agent loads the file again (see restore.py).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amphora_agent import netns
from amphora_agent.config import AgentConfig
from amphora_agent.fsutil import atomic_write
from amphora_agent.processes import run_command

NFT_TIMEOUT_S = 30.0
TABLE = "inet amphora_table"
INPUT_CHAIN = "amphora_chain"
VIP_CHAIN = "amphora_vip_chain"
PROTOCOLS = ("TCP", "UDP", "SCTP", "VRRP")
# Octavia's controller spells VRRP in lower case (octavia.common.constants.VRRP), and its agent
# knows only that spelling; both are taken here.
OCTAVIA_VRRP = "vrrp"
VRRP_IP_PROTOCOL = 112

# What the input chain lets through whatever the rules say. The drop-all ruleset of a freshly
# plugged port has only the ICMP and DHCP lines: path MTU discovery, neighbour discovery and
# address configuration must work before any listener exists.
_ICMP_AND_DHCP = (
    "icmp type destination-unreachable accept",
    "icmpv6 type { nd-neighbor-solicit, nd-router-advert, nd-neighbor-advert, packet-too-big,"
    " destination-unreachable } accept",
    "udp sport 67 udp dport 68 accept",
    "udp sport 547 udp dport 546 accept",
)
# With rules: replies to what haproxy sent (health checks, member connections) come back, the
# namespace talks to itself on lo only, and loopback sources from outside are spoofed.
_STATEFUL_AND_LOOPBACK = (
    "ct state vmap { established : accept, related : accept, invalid : drop }",
    'iif "lo" accept',
    "ip saddr 127.0.0.0/8 drop",
    "ip6 saddr ::1 drop",
)


class RulesError(ValueError):
    """The rules document is not what the API accepts (a 400); says what is wrong."""


class FirewallError(RuntimeError):
    """nft refused or failed (a 500); carries nft's output."""


@dataclass(frozen=True)
class Rule:
    """Allow protocol to port from source (None: from anywhere)."""

    protocol: str
    port: int
    source: ipaddress.IPv4Network | ipaddress.IPv6Network | None

    def nft(self) -> str:
        match = []
        if self.source is not None:
            # Taken literally: 0.0.0.0/0 is every IPv4 source, not every source.
            match.append(f"{'ip' if self.source.version == 4 else 'ip6'} saddr {self.source}")
        if self.protocol == "VRRP":
            # VRRP has no ports; the rule's port is ignored (Octavia sends 112).
            match.append(f"meta l4proto {VRRP_IP_PROTOCOL}")
        else:
            match.append(f"{self.protocol.lower()} dport {self.port}")
        return " ".join([*match, "accept"])


def parse_rules(document: Any) -> list[Rule]:
    """The JSON body of PUT /1.0/interface/{ip}/rules: a list of {protocol, cidr, port}, no
    other keys; cidr may be null (everyone)."""
    if not isinstance(document, list):
        raise RulesError("the rules must be a JSON list")
    rules = []
    for index, item in enumerate(document):
        where = f"rule {index}"
        if not isinstance(item, dict):
            raise RulesError(f"{where} is not an object")
        unknown = sorted(set(item) - {"protocol", "cidr", "port"})
        missing = sorted({"protocol", "cidr", "port"} - set(item))
        if unknown or missing:
            raise RulesError(f"{where}: unknown keys {unknown}, missing keys {missing}")
        protocol, cidr, port = item["protocol"], item["cidr"], item["port"]
        if protocol == OCTAVIA_VRRP:
            protocol = "VRRP"
        if protocol not in PROTOCOLS:
            raise RulesError(f"{where}: protocol {protocol!r} is not one of {list(PROTOCOLS)}")
        # The range first: JSON as Python reads it may carry NaN and Infinity.
        if isinstance(port, bool) or not isinstance(port, int | float) \
                or not 1 <= port <= 65535 or port != int(port):
            raise RulesError(f"{where}: port {port!r} is not a number in 1..65535")
        source = None
        if cidr is not None:
            if not isinstance(cidr, str):
                raise RulesError(f"{where}: cidr {cidr!r} is not a string or null")
            try:
                source = ipaddress.ip_network(cidr, strict=False)
            except ValueError as exc:
                raise RulesError(f"{where}: cidr {cidr!r}: {exc}") from exc
        rules.append(Rule(protocol, int(port), source))
    return rules


def render_ruleset(interface: str | None, rules: list[Rule]) -> str:
    """The whole ruleset file. interface None: the drop-all set of a freshly plugged port.

    The table is declared, deleted and declared again so that loading the file replaces
    whatever an earlier load left, in the same transaction (declaring first makes the delete
    valid when the table does not exist yet).
    """
    lines = [
        "# Written by the amphora agent: the data-plane namespace accepts only what this allows.",
        f"table {TABLE} {{}}",
        f"delete table {TABLE}",
        f"table {TABLE} {{",
        f"    chain {INPUT_CHAIN} {{",
        "        type filter hook input priority filter; policy drop;",
    ]
    if interface is not None:
        lines += [f"        {line}" for line in _STATEFUL_AND_LOOPBACK]
    lines += [f"        {line}" for line in _ICMP_AND_DHCP]
    if interface is not None:
        lines += [f'        iifname "{interface}" goto {VIP_CHAIN}', "    }",
                  f"    chain {VIP_CHAIN} {{"]
        lines += [f"        {rule.nft()}" for rule in rules]
    lines += ["    }", "}", ""]
    return "\n".join(lines)


class VipFirewall:
    def __init__(self, config: AgentConfig) -> None:
        self._namespace = config.network_namespace
        self.rules_path: Path = config.base_path / "nftables-vip.rules"

    def installed(self) -> bool:
        return self.rules_path.is_file()

    def close_all(self) -> None:
        """A port that needs the firewall was plugged: drop everything until rules arrive.
        Rules already installed (a re-plug, a second SR-IOV port) stay as they are."""
        if not self.installed():
            self._install(render_ruleset(None, []))

    def allow(self, interface: str, rules: list[Rule]) -> None:
        """Replace the rules: traffic arriving on interface is accepted only as rules say."""
        self._install(render_ruleset(interface, rules))

    def reload(self) -> None:
        """Load the recorded ruleset again (after a reboot emptied the kernel's tables)."""
        if self.installed():
            netns.ensure_namespace(self._namespace)
            self._load(self.rules_path)

    def _install(self, ruleset: str) -> None:
        if not self._namespace:
            # A drop policy on the agent's own namespace would cut the controller off.
            raise FirewallError("the VIP firewall needs a data-plane network namespace")
        netns.ensure_namespace(self._namespace)
        atomic_write(self.rules_path, ruleset.encode(), mode=0o600, validate=self._check)
        self._load(self.rules_path)

    def _check(self, path: Path) -> None:
        self._nft(["-c", "-f", str(path)])

    def _load(self, path: Path) -> None:
        self._nft(["-f", str(path)])

    def _nft(self, args: list[str]) -> None:
        argv = netns.in_namespace(self._namespace, ["nft", *args])
        result = run_command(argv, NFT_TIMEOUT_S, FirewallError)
        if result.returncode != 0:
            raise FirewallError(result.stdout.strip() or f"nft exited with {result.returncode}")
