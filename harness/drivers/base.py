"""The driver seam: what a controller does to one load balancer on its amphorae, whichever
driver does it. Two implementations:

- `harness`: our controller (harness.drivers.controller.LoadBalancerController), our renderer;
- `octavia`: OpenStack Octavia's own amphora driver (harness.drivers.octavia_driver), called in
  the order Octavia's controller-worker flows call it, rendering with Octavia's templates.

Suites make drivers through the pytest plugin's `lb_driver_factory` (harness.drivers.factory),
so `--driver octavia` runs them with Octavia's driver unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple, Protocol

from harness.amphora_api.client import AmphoraClient
from harness.model.loadbalancer import (
    AMPHORAE_PER_TOPOLOGY,
    Certificate,
    LoadBalancer,
    MemberPort,
    VipPort,
)
from harness.render.amphora_configs import AmphoraPaths


class StoredFile(NamedTuple):
    """A file a driver stores on an amphora: its name and the md5 of what it uploads."""

    name: str
    md5: str


class LoadBalancerDriver(Protocol):
    """One load balancer (lb, which tests may change between calls) on one amphora (SINGLE) or
    two (ACTIVE_STANDBY: the first starts as MASTER, the second as BACKUP)."""

    name: str
    lb: LoadBalancer

    @property
    def clients(self) -> list[AmphoraClient]:
        """The amphorae's clients, in role order (a replacement takes its predecessor's
        place)."""

    def create(self, vip_ports: Sequence[VipPort] | None = None,
               member_ports: Sequence[MemberPort] | None = None) -> None:
        """Plug the VIP port of each amphora (none given: already plugged) and its member port
        (none given: already plugged), push certificates and haproxy.cfg and start haproxy;
        for a pair configure and start VRRP; for an SR-IOV VIP open the amphorae's
        firewalls."""

    def update(self) -> None:
        """Push the current lb (certificates, haproxy.cfg) and reload."""

    def delete(self) -> None:
        """Remove the load balancer from its amphorae (haproxy stopped, its files gone)."""

    def replace_amphora(self, lost_amphora_id: str, client: AmphoraClient, vip_port: VipPort,
                        member_port: MemberPort | None = None,
                        paths: AmphoraPaths | None = None) -> None:
        """A failover: a new amphora (booted, reachable) takes the lost one's place and role;
        its ports are plugged, it gets the configuration, and a pair's VRRP is configured anew
        on both amphorae."""

    def rotate_certificate(self, old: Certificate, new: Certificate) -> None:
        """Replace old by new wherever a listener uses it, then update."""

    def adopt(self, vip_ports: Sequence[VipPort]) -> None:
        """Take over the load balancer an earlier driver (another process) created on these
        amphorae, whose VIP ports are plugged already, as a restarted controller knows them
        from its database."""

    def configure_vrrp(self) -> None:
        """Upload each amphora's keepalived.conf (a pair, its VIP ports plugged)."""

    def certificate_file(self, cert: Certificate) -> StoredFile:
        """Where this driver stores cert on an amphora (under the load balancer's certificate
        directory), and the md5 of what it uploads there."""

    def rendered_configs(self) -> dict[str, str]:
        """amphora id -> the haproxy.cfg this driver pushes for the current lb (rendered, not
        sent)."""

    def close(self) -> None:
        """Let go of what the driver holds (not the load balancer: see delete)."""


class DriverError(RuntimeError):
    """A flow cannot go on: what went wrong, on which amphora."""


def check_amphorae(lb: LoadBalancer, clients: Sequence[AmphoraClient]) -> None:
    """A driver is made for exactly the amphorae its load balancer's topology runs on."""
    wanted = AMPHORAE_PER_TOPOLOGY[lb.topology]
    if len(clients) != wanted:
        raise DriverError(f"a {lb.topology.value} load balancer runs on {wanted} amphorae, "
                          f"not {len(clients)}")


def check_ports(amphora_count: int, vip_ports: Sequence[VipPort] | None,
                member_ports: Sequence[MemberPort] | None) -> None:
    """Ports given to a create are one per amphora."""
    for what, ports in (("VIP", vip_ports), ("member", member_ports)):
        if ports is not None and len(ports) != amphora_count:
            raise DriverError(f"need {amphora_count} {what} ports, got {len(ports)}")


def replace_certificate(lb: LoadBalancer, old: Certificate, new: Certificate) -> None:
    """Put new wherever a listener of lb uses old (default or SNI certificate)."""
    replaced = False
    for listener in lb.listeners:
        if listener.certificate is old:
            listener.certificate = new
            replaced = True
        for index, cert in enumerate(listener.sni_certificates):
            if cert is old:
                listener.sni_certificates[index] = new
                replaced = True
    if not replaced:
        raise DriverError(f"no listener of {lb.id} uses certificate {old.id}")


def paths_for(paths: AmphoraPaths | Mapping[str, AmphoraPaths] | None,
              amphora_id: str) -> AmphoraPaths:
    """An amphora's layout from one for all amphorae (as in a cloud) or one per amphora id."""
    if paths is None:
        return AmphoraPaths()
    if isinstance(paths, AmphoraPaths):
        return paths
    try:
        return paths[amphora_id]
    except KeyError:
        raise DriverError(f"no paths given for amphora {amphora_id}") from None
