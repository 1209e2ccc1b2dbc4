"""Push a load-balancer file to a standing lab (harness.lab.standing) as a controller does, with
either driver (harness.drivers.base: ours, or Octavia's from an --octavia-source).

The first push creates the load balancer on the lab's amphorae (VIP plugged, config, start; VRRP
for a pair); later ones update the same one (same id: upload and reload), so a push behaves as a
controller's update would. What was pushed is written into the lab's record: the next push, and
an amphora's restore after a fault, need its id and VRRP password.
"""

from __future__ import annotations

from pathlib import Path

from harness.amphora_api.pki import CertificateAuthority
from harness.drivers.factory import DriverFactory, OctaviaRuntime, amphora_open_files
from harness.drivers.octavia_process import OctaviaProbe
from harness.drivers.octavia_venv import ensure_octavia_python
from harness.lab.standing import StandingLab
from harness.lab.standing_state import LoadBalancerRecord
from harness.model.loadbalancer import LoadBalancer, Topology, VrrpGroup
from harness.model.yaml_loader import LbDefinition
from harness.octavia_source import OctaviaSource, parse_octavia_source


def push_lb(lab: StandingLab, source: Path, driver: str = "harness",
            octavia_source: OctaviaSource | None = None) -> LoadBalancer:
    """Push the load balancer of a YAML file to the lab's load-balancer amphorae with driver
    (harness | octavia). TLS listeners get certificates for their symbolic names from a fresh
    tenant CA."""
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
    probes: list[OctaviaProbe] = []  # Octavia's driver, started when asked for

    def probe() -> OctaviaProbe:
        if not probes:
            source = octavia_source or parse_octavia_source(None)
            probes.append(OctaviaProbe(ensure_octavia_python(source)))
        return probes[0]

    factory = DriverFactory(driver, OctaviaRuntime(
        probe=probe, credentials=lab.record.driver,
        open_files_limit=lambda client: amphora_open_files(lab.provider, lab.amphorae, client)))
    try:
        controller = factory(lb, [a.client for a in lab.lb_amphorae], vrrp_group=group)
        if previous is None:
            controller.create(lab.vip_ports())
        else:
            controller.adopt(lab.vip_ports())
            controller.update()
    finally:
        factory.close()
        for started in probes:
            started.close()
    lab.record.load_balancer = LoadBalancerRecord(
        source=str(source), id=lb.id, vrrp_auth_pass=group.auth_pass,
        listeners=[{"port": item.port, "protocol": item.protocol.value}
                   for item in lb.listeners])
    lab.record.save()
    return lb
