"""Our load-balancer model in Octavia's vocabulary: the JSON load balancer the Octavia driver
probe (harness/drivers/octavia_probe.py) builds Octavia's data models from.

Every field of harness.model.loadbalancer has its Octavia counterpart here: listeners (HTTP,
TCP, TERMINATED_HTTPS with its default and SNI certificates), timeouts, connection limits,
inserted headers, allowed CIDRs, pools (algorithm, session persistence, health monitor),
members (weight, backup, admin state), L7 policies and rules, the SR-IOV VIP (vnic_type
direct) and the VRRP settings of a pair. The probe takes more than our model has (HTTPS
pass-through, PROXY/PROXYV2 pools, PROMETHEUS, client authentication with CA and CRL, ALPN,
TLS versions and ciphers, HSTS, pool TLS to members, member monitor address and port, additional
VIPs); those are written in this vocabulary directly (see tests/octavia).

Certificates travel as `secrets`: ref -> {certificate, private_key, intermediates} (PEM text),
which the probe stores for Octavia's local certificate manager.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from harness.model.loadbalancer import (
    Certificate,
    L7Action,
    Listener,
    ListenerProtocol,
    LoadBalancer,
    Pool,
    Topology,
    VipSubnet,
    VrrpGroup,
    VrrpRole,
)
from harness.render.amphora_configs import AmphoraPaths

# The pool protocol Octavia's API gives a pool behind each of our listener protocols.
POOL_PROTOCOL = {ListenerProtocol.HTTP: "HTTP", ListenerProtocol.TERMINATED_HTTPS: "HTTP",
                 ListenerProtocol.TCP: "TCP"}
_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----.*?-----END \1-----\n?", re.S)


@dataclass(frozen=True)
class AmphoraAccess:
    """How Octavia's driver reaches an amphora's agent and where that agent keeps its files:
    [haproxy_amphora] options, which Octavia sets once for all amphorae. Where the lab's
    amphorae fall short of an amphora VM: default_connection_limit is what Octavia renders for
    a listener without a limit (None: Octavia's own, 50000), memory_kb the most available
    memory the driver is told of (None: what the agent reports)."""

    api_port: int
    paths: AmphoraPaths
    client_cert: str
    server_ca: str
    default_connection_limit: int | None = None
    memory_kb: int | None = None


@dataclass(frozen=True)
class AmphoraSpec:
    """What Octavia's database knows about one amphora of the load balancer: its id, its
    management address, how to reach it, and (once its VIP port is plugged) its address on the
    VIP network and its VRRP role."""

    id: str
    lb_network_ip: str
    access: AmphoraAccess
    role: VrrpRole | None = None
    vrrp_ip: str | None = None
    vrrp_port_id: str | None = None

    def to_json(self) -> dict:
        access = self.access
        spec: dict = {"id": self.id, "lb_network_ip": self.lb_network_ip,
                      "api_port": access.api_port, "base_path": access.paths.base_path,
                      "base_cert_dir": access.paths.base_cert_dir,
                      "client_cert": access.client_cert, "server_ca": access.server_ca,
                      "default_connection_limit": access.default_connection_limit,
                      "memory_kb": access.memory_kb,
                      "role": self.role.name if self.role else "STANDALONE",
                      "vrrp_ip": self.vrrp_ip, "vrrp_port_id": self.vrrp_port_id}
        if self.role:
            spec["vrrp_priority"] = self.role.value
        return spec


def subnet_json(subnet: VipSubnet | None, subnet_id: str) -> dict | None:
    if subnet is None:
        return None
    return {"id": subnet_id, "cidr": subnet.cidr, "gateway_ip": subnet.gateway,
            "host_routes": [{"destination": r.destination, "nexthop": r.nexthop}
                            for r in subnet.host_routes]}


def lb_json(lb: LoadBalancer, amphorae: Sequence[AmphoraSpec], vip_subnet: VipSubnet | None,
            vrrp: VrrpGroup) -> dict:
    """The load balancer lb on these amphorae, in the probe's vocabulary."""
    lb.validate()  # objects are mutable: what travels must have passed the grammars
    listeners = [listener_json(listener) for listener in lb.listeners]
    return {
        "id": lb.id,
        "topology": lb.topology.value,
        "vip": {"ip_address": lb.vip_address, "vnic_type": "direct" if lb.sriov_vip else "normal",
                "subnet": subnet_json(vip_subnet, f"vip-subnet-{lb.id}")},
        "vrrp": {"vrrp_id": vrrp.vrrp_id, "auth_pass": vrrp.auth_pass,
                 "advert_int": vrrp.advert_int, "check_interval": vrrp.check_interval,
                 "fail_count": vrrp.check_fall, "success_count": vrrp.check_rise,
                 "garp_refresh": vrrp.garp_refresh,
                 "garp_refresh_repeat": vrrp.garp_refresh_repeat},
        "amphorae": [amphora.to_json() for amphora in amphorae],
        "pools": [pool_json(pool, listener) for listener in lb.listeners
                  for pool in listener.pools],
        "listeners": listeners,
        "secrets": {cert.id: certificate_json(cert) for listener in lb.listeners
                    for cert in listener.certificates},
    }


def listener_json(listener: Listener) -> dict:
    headers = {header.value: "true" for header in listener.insert_headers}
    return {
        "id": listener.id,
        "protocol": listener.protocol.value,
        "protocol_port": listener.port,
        "connection_limit": listener.connection_limit,
        "timeout_client_data": listener.timeout_client_data,
        "timeout_member_connect": listener.timeout_member_connect,
        "timeout_member_data": listener.timeout_member_data,
        "timeout_tcp_inspect": listener.timeout_tcp_inspect,
        "insert_headers": headers,
        "allowed_cidrs": list(listener.allowed_cidrs),
        "tls_certificate_id": listener.certificate.id if listener.certificate else None,
        "sni_container_ids": [cert.id for cert in listener.sni_certificates],
        "default_pool_id": listener.default_pool_id,
        "pool_ids": [pool.id for pool in listener.pools],
        "l7policies": [{
            "id": policy.id, "action": policy.action.value, "position": policy.position,
            "redirect_pool_id": policy.redirect_pool_id, "redirect_url": policy.redirect_url,
            # Octavia's API keeps a code only for redirects to a URL (or prefix).
            "redirect_http_code": (policy.redirect_http_code
                                   if policy.action is L7Action.REDIRECT_TO_URL else None),
            "rules": [{"id": rule.id, "type": rule.type.value,
                       "compare_type": rule.compare_type.value, "key": rule.key,
                       "value": rule.value, "invert": rule.invert} for rule in policy.rules],
        } for policy in listener.l7policies],
    }


def pool_json(pool: Pool, listener: Listener) -> dict:
    spec: dict = {
        "id": pool.id,
        "protocol": POOL_PROTOCOL[listener.protocol],
        "lb_algorithm": pool.algorithm.value,
        "members": [{"id": member.id, "address": member.address, "protocol_port": member.port,
                     "weight": member.weight, "backup": member.backup,
                     "enabled": member.admin_state_up} for member in pool.members],
    }
    if pool.session_persistence:
        spec["session_persistence"] = {"type": pool.session_persistence.type.value,
                                       "cookie_name": pool.session_persistence.cookie_name}
    monitor = pool.health_monitor
    if monitor:
        spec["health_monitor"] = {
            "id": f"monitor-{pool.id}", "type": monitor.type.value, "delay": monitor.delay,
            "timeout": monitor.timeout, "max_retries": monitor.max_retries,
            "max_retries_down": monitor.max_retries_down}
        if monitor.type.value in ("HTTP", "HTTPS"):
            spec["health_monitor"].update(http_method=monitor.http_method,
                                          url_path=monitor.url_path,
                                          expected_codes=monitor.expected_codes)
    return spec


def certificate_json(cert: Certificate) -> dict:
    """A key + certificate + chain bundle split the way a certificate container holds it: the
    first certificate is the certificate, the others its intermediates."""
    blocks = [match.group(0) for match in _PEM_BLOCK.finditer(cert.pem.decode())]
    certificates = [b for b in blocks if "CERTIFICATE-----" in b.splitlines()[0]]
    keys = [b for b in blocks if "PRIVATE KEY-----" in b.splitlines()[0]]
    if not certificates or len(keys) != 1:
        raise ValueError(f"certificate {cert.id}: expected one private key and at least one "
                         f"certificate, found {len(keys)} and {len(certificates)}")
    return {"certificate": certificates[0], "private_key": keys[0],
            "intermediates": "".join(certificates[1:]) or None}


def role_of(index: int, topology: Topology) -> VrrpRole | None:
    """The first amphora of a pair is the MASTER, the second the BACKUP (as in ours)."""
    if topology is not Topology.ACTIVE_STANDBY:
        return None
    return (VrrpRole.MASTER, VrrpRole.BACKUP)[index]
