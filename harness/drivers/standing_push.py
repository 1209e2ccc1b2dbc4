"""Push a load-balancer file to a standing lab (harness.lab.standing) as a controller does.

The first push creates the load balancer on the lab's amphorae (VIP plugged, config, start; VRRP
for a pair); later ones update the same one (same id: upload and reload), so a push behaves as a
controller's update would. What was pushed is written into the lab's record: the next push, and
an amphora's restore after a fault, need its id and VRRP password.
"""

from __future__ import annotations

from pathlib import Path

from harness.amphora_api.pki import CertificateAuthority
from harness.drivers.controller import LoadBalancerController
from harness.lab.standing import StandingLab
from harness.lab.standing_state import LoadBalancerRecord
from harness.model.loadbalancer import LoadBalancer, Topology, VrrpGroup
from harness.model.yaml_loader import LbDefinition


def push_lb(lab: StandingLab, source: Path) -> LoadBalancer:
    """Push the load balancer of a YAML file to the lab's load-balancer amphorae. TLS listeners
    get certificates for their symbolic names from a fresh tenant CA."""
    definition = LbDefinition.read(source)
    tenant_ca = CertificateAuthority("amphora-harness tenant CA")
    certificates = {name: tenant_ca.issue(name, dns_names=(name,)).bundle
                    for name in definition.certificate_names}
    lb = definition.load(addresses=lab.addresses(), certificates=certificates)
    lb.topology = Topology(lab.record.topology)
    previous = lab.record.load_balancer
    # A pair's VRRP password must not change between pushes, or the two keepalived would stop
    # hearing each other.
    group = VrrpGroup(auth_pass=previous.vrrp_auth_pass) if previous else VrrpGroup()
    if previous is not None:
        lb.id = previous.id
    controller = LoadBalancerController(lb, [a.client for a in lab.lb_amphorae],
                                        vrrp_group=group)
    if previous is None:
        controller.create(lab.vip_ports())
    else:
        controller.update()
    lab.record.load_balancer = LoadBalancerRecord(
        source=str(source), id=lb.id, vrrp_auth_pass=group.auth_pass,
        listeners=[{"port": item.port, "protocol": item.protocol.value}
                   for item in lb.listeners])
    lab.record.save()
    return lb
