"""Link faults: frames dropped by nftables rules of the `bridge` family on the host.

The rules match the MAC addresses of the amphorae's ports, so they need nothing inside the
amphora and work against any agent image. Each fault lives in a lab table of its own
(harness.lab.host_tables), so lab teardown and gc find what a crashed run left behind. Which
bridge hook sees a frame depends on where it comes from, so a rule about one port sits in the
right hooks:

    prerouting  frames entering the bridge from a port (whatever their destination)
    forward     frames from one port to another
    output      frames the host itself sends into the bridge (the harness's client traffic)
"""

from __future__ import annotations

import itertools
import json

from harness.faults.base import Fault, FaultError
from harness.lab.host_shell import THIS_HOST, HostShell
from harness.lab.host_tables import nft, table_name

IP_PROTOCOL_VRRP = 112
# A process numbers its tables; a standing lab names its own (harness.faults.standing).
_table_numbers = itertools.count(1)


def partition_rules(mac_a: str, mac_b: str) -> dict[str, list[str]]:
    """Every frame between two ports dropped, in both directions."""
    return {"forward": [f"ether saddr {mac_a} ether daddr {mac_b} counter drop",
                        f"ether saddr {mac_b} ether daddr {mac_a} counter drop"]}


def loss_rules(mac: str, percent: int, *, spare_vrrp: bool = False) -> dict[str, list[str]]:
    """`percent` % of the frames from and to one port dropped at random, each frame once.
    spare_vrrp leaves the port's VRRP packets alone (to lose those, see advert_loss_rules)."""
    if not 0 < percent < 100:
        raise FaultError(f"loss must be between 1 and 99 percent, not {percent}")
    chance = f"numgen random mod 100 < {percent} counter drop"
    spare = f"meta l4proto != {IP_PROTOCOL_VRRP} " if spare_vrrp else ""
    return {
        "prerouting": [f"ether saddr {mac} {spare}{chance}"],
        "forward": [f"ether daddr {mac} {spare}{chance}"],
        "output": [f"ether daddr {mac} {spare}{chance}"],
    }


def advert_loss_rules(mac: str, lost: int, every: int) -> dict[str, list[str]]:
    """Of every `every` VRRP packets the port sends, the first `lost` dropped — a fixed pattern,
    not a random one, so how many adverts in a row go missing is known exactly."""
    if not 0 < lost < every:
        raise FaultError(f"cannot lose {lost} of every {every} adverts")
    return {"prerouting": [f"ether saddr {mac} ip protocol {IP_PROTOCOL_VRRP} "
                           f"numgen inc mod {every} < {lost} counter drop"]}


class BridgeRules(Fault):
    """Frame-dropping rules on the host's bridges, in a table of their own; every rule counts
    what it dropped. shell: where nft runs, the host of the lab's bridges
    (Provider.host_shell)."""

    def __init__(self, lab_id: str, description: str, rules: dict[str, list[str]],
                 shell: HostShell = THIS_HOST) -> None:
        self.description = description
        self.table = table_name(lab_id, str(next(_table_numbers)))
        self.rules = rules
        self.shell = shell

    def script(self) -> str:
        """The nft script that creates the table: one base chain per hook."""
        chains = []
        for hook, rules in self.rules.items():
            body = "".join(f"    {rule}\n" for rule in rules)
            chains.append(f"  chain {hook} {{\n"
                          f"    type filter hook {hook} priority -10; policy accept;\n"
                          f"{body}  }}\n")
        return f"table bridge {self.table} {{\n{''.join(chains)}}}\n"

    def apply(self) -> None:
        result = nft([self.script()], self.shell)
        if result.returncode != 0:
            raise FaultError(f"nft: {result.stderr.strip()}")

    def heal(self) -> None:
        result = nft(["delete", "table", "bridge", self.table], self.shell)
        if result.returncode != 0 and "No such file" not in result.stderr:
            raise FaultError(f"nft: {result.stderr.strip()}")

    def dropped(self) -> int:
        """Frames the rules have dropped so far (0 once healed)."""
        result = nft(["-j", "list", "table", "bridge", self.table], self.shell)
        if result.returncode != 0:
            return 0
        total = 0
        for item in json.loads(result.stdout)["nftables"]:
            for expression in item.get("rule", {}).get("expr", []):
                total += expression.get("counter", {}).get("packets", 0)
        return total
