"""What a load-balancer controller does to amphorae, over the Amphora API only: our driver
(`harness`) of the driver seam (harness.drivers.base), rendering with harness.render.

One LoadBalancerController drives one load balancer on its amphorae: one for SINGLE, two for
ACTIVE_STANDBY (the first is the VRRP MASTER, the second the BACKUP). The flows follow Octavia's
driver:
- create: plug the VIP on every amphora (the client retries the 404 an agent answers while the
  hot-plugged interface has not appeared yet) and its member port, upload certificates and
  crt-lists, upload
  haproxy.cfg, start; for a pair also upload each amphora's keepalived.conf and start VRRP;
- update: upload changed certificates, upload haproxy.cfg, reload; then delete certificate files
  nothing refers to any more (so a rotation leaves only the new certificate behind);
- with an SR-IOV VIP (sriov_vip), the VIP is plugged with is_sriov and, after every push, each
  amphora gets its VIP firewall rules: every listener's port from its allowed_cidrs (anyone
  when empty), and VRRP from the peer of a pair;
- delete: DELETE the load balancer's listeners (the agent stops haproxy and removes its files);
- replace_amphora (failover of one amphora, after the cloud booted its successor): plug the VIP
  and the member port on the new amphora, push certificates and haproxy.cfg and start it; for a
  pair re-render every keepalived.conf (the peer address changed), start VRRP on the new amphora
  and reload it on the survivor. The new amphora takes the lost one's role; with nopreempt it
  does not take the VIP from the survivor.
Every file uploaded is checked against the md5 the agent answers with.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from harness.amphora_api.client import AmphoraAPIError, AmphoraClient
from harness.drivers.base import (
    DriverError,
    StoredFile,
    check_amphorae,
    check_ports,
    paths_for,
    replace_certificate,
)
from harness.model.loadbalancer import (
    Certificate,
    LoadBalancer,
    MemberPort,
    VipPort,
    VrrpAmphora,
    VrrpGroup,
    VrrpRole,
)
from harness.render.amphora_configs import (
    AmphoraPaths,
    render_crt_list,
    render_haproxy,
    render_keepalived,
)

ROLES_IN_ORDER = (VrrpRole.MASTER, VrrpRole.BACKUP)


# Our controller's errors are the seam's.
ControllerError = DriverError


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


@dataclass
class _AmphoraState:
    """What the controller remembers about one amphora of the load balancer."""

    client: AmphoraClient
    role: VrrpRole
    paths: AmphoraPaths
    vip_port: VipPort | None = None
    interface: str | None = None
    # Certificate files on the amphora: file name -> md5 of what was uploaded.
    cert_files: dict[str, str] = field(default_factory=dict)

    @property
    def amphora_id(self) -> str:
        return self.client.amphora_id


class LoadBalancerController:
    name = "harness"

    def __init__(
        self,
        lb: LoadBalancer,
        clients: Sequence[AmphoraClient],
        *,
        paths: AmphoraPaths | Mapping[str, AmphoraPaths] | None = None,
        vrrp_group: VrrpGroup | None = None,
    ) -> None:
        """paths: where the agents keep their files; one AmphoraPaths for all amphorae (as in a
        cloud, where every amphora has the same layout) or one per amphora id."""
        check_amphorae(lb, clients)
        self.lb = lb
        self.vrrp_group = vrrp_group or VrrpGroup()
        self.amphorae = [
            _AmphoraState(client, role, paths_for(paths, client.amphora_id))
            for client, role in zip(clients, ROLES_IN_ORDER[: len(clients)], strict=True)
        ]

    @property
    def clients(self) -> list[AmphoraClient]:
        return [amphora.client for amphora in self.amphorae]

    # --- flows ----------------------------------------------------------------------------

    def create(self, vip_ports: Sequence[VipPort] | None = None,
               member_ports: Sequence[MemberPort] | None = None) -> None:
        """Plug the VIP and member ports (when given; without them they are assumed plugged
        already), push the configuration and start haproxy, then VRRP for a pair."""
        check_ports(len(self.amphorae), vip_ports, member_ports)
        for index, amphora in enumerate(self.amphorae):
            if vip_ports is not None:
                self._plug_vip(amphora, vip_ports[index])
            if member_ports is not None:
                amphora.client.plug_network(member_ports[index].plug_request())
        self._push(action="start")
        if self.lb.is_pair:
            self.configure_vrrp()
            for amphora in self.amphorae:
                amphora.client.vrrp_action("start")

    def update(self) -> None:
        """Push the current model (certificates, haproxy.cfg) and reload."""
        self._push(action="reload")

    def delete(self) -> None:
        """Remove the load balancer from its amphorae (haproxy stopped, files gone)."""
        for amphora in self.amphorae:
            if self.lb.is_pair:
                amphora.client.vrrp_action("stop")
            amphora.client.delete_lb(self.lb.id)
            amphora.cert_files.clear()

    def replace_amphora(self, lost_amphora_id: str, client: AmphoraClient, vip_port: VipPort,
                        member_port: MemberPort | None = None,
                        paths: AmphoraPaths | None = None) -> None:
        """Bring a new amphora (booted and reachable) in for a lost one, as Octavia's amphora
        failover does; member_port None: its member network is plugged already."""
        lost = next((a for a in self.amphorae if a.amphora_id == lost_amphora_id), None)
        if lost is None:
            raise ControllerError(f"amphora {lost_amphora_id} does not serve {self.lb.id}")
        new = _AmphoraState(client, lost.role, paths or lost.paths)
        self._plug_vip(new, vip_port)
        if member_port is not None:
            new.client.plug_network(member_port.plug_request())
        self._push_to(new, action="start")
        self.amphorae[self.amphorae.index(lost)] = new
        # The survivor's VRRP rule names the lost amphora's address until this.
        self.push_firewall_rules()
        if self.lb.is_pair:
            self.configure_vrrp()
            new.client.vrrp_action("start")
            for survivor in self.amphorae:
                if survivor is not new:
                    survivor.client.vrrp_action("reload")

    def rotate_certificate(self, old: Certificate, new: Certificate) -> None:
        """Replace a certificate wherever listeners use it (default or SNI), then update: the
        new file is uploaded, haproxy reloaded, the old file deleted."""
        replace_certificate(self.lb, old, new)
        self.update()

    def certificate_file(self, cert: Certificate) -> StoredFile:
        return StoredFile(f"{cert.id}.pem", md5_hex(cert.pem))

    def rendered_configs(self) -> dict[str, str]:
        return {amphora.amphora_id: render_haproxy(self.lb, amphora.amphora_id, amphora.paths)
                for amphora in self.amphorae}

    def close(self) -> None:
        """Nothing held: every call is a request of its own."""

    # --- steps ----------------------------------------------------------------------------

    def adopt(self, vip_ports: Sequence[VipPort]) -> None:
        """Take over the load balancer an earlier controller created on these amphorae, whose
        VIP ports are plugged already."""
        for amphora, port in zip(self.amphorae, vip_ports, strict=True):
            self._take_vip_port(amphora, port)

    def _plug_vip(self, amphora: _AmphoraState, port: VipPort) -> None:
        amphora.client.plug_vip(self.lb.vip_address, port.plug_request(self.lb.sriov_vip))
        self._take_vip_port(amphora, port)

    def _take_vip_port(self, amphora: _AmphoraState, port: VipPort) -> None:
        amphora.vip_port = port
        # The agent says where it plugged the port ("VIP ... plugged on interface X"); asking
        # by address is the documented way and works for an agent restarted since.
        amphora.interface = amphora.client.get_interface(port.vrrp_ip)

    def configure_vrrp(self) -> None:
        """Upload each amphora's keepalived.conf (VIP plugged on both first)."""
        for amphora in self.amphorae:
            if amphora.vip_port is None or amphora.interface is None:
                raise ControllerError(f"amphora {amphora.amphora_id}: VIP not plugged")
        for amphora in self.amphorae:
            peers = [other.vip_port.vrrp_ip for other in self.amphorae if other is not amphora]
            vrrp = VrrpAmphora(
                amphora_id=amphora.amphora_id,
                role=amphora.role,
                vrrp_ip=amphora.vip_port.vrrp_ip,
                interface=amphora.interface,
                peer_ips=peers,
            )
            text = render_keepalived(
                self.lb, vrrp, amphora.vip_port.subnet, self.vrrp_group, amphora.paths
            )
            amphora.client.upload_vrrp_config(text)

    def _push(self, action: str) -> None:
        for amphora in self.amphorae:
            self._push_to(amphora, action)
        self.push_firewall_rules()

    def vrrp_ip(self, amphora_id: str) -> str:
        """The amphora's own address on the VIP network (its VIP port's fixed IP)."""
        amphora = next((a for a in self.amphorae if a.amphora_id == amphora_id), None)
        if amphora is None or amphora.vip_port is None:
            raise ControllerError(f"amphora {amphora_id} has no VIP port of {self.lb.id}")
        return amphora.vip_port.vrrp_ip

    def push_firewall_rules(self) -> None:
        """Open each amphora's VIP firewall for the current model (SR-IOV VIPs only)."""
        if not self.lb.sriov_vip:
            return
        for amphora in self.amphorae:
            if amphora.vip_port is None:
                raise ControllerError(f"amphora {amphora.amphora_id}: VIP not plugged")
            peers = [other.vip_port.vrrp_ip for other in self.amphorae
                     if other is not amphora and other.vip_port is not None]
            amphora.client.set_interface_rules(amphora.vip_port.vrrp_ip,
                                               vip_firewall_rules(self.lb, peers))

    def _push_to(self, amphora: _AmphoraState, action: str) -> None:
        # Render first: a model error must stop the flow before anything is sent.
        config = render_haproxy(self.lb, amphora.amphora_id, amphora.paths)
        files = self._certificate_files(amphora.paths)
        self._upload_certificates(amphora, files)
        etag = amphora.client.upload_config(self.lb.id, config)
        _check_md5(amphora, "haproxy.cfg", config.encode(), etag)
        amphora.client.lb_action(self.lb.id, action)
        self._delete_stale_certificates(amphora, files)

    def _certificate_files(self, paths: AmphoraPaths) -> dict[str, bytes]:
        """Every file the listeners need under the load balancer's certificate directory:
        certificates as {id}.pem, crt-lists as {listener_id}.pem (Octavia's names)."""
        files: dict[str, bytes] = {}
        for listener in self.lb.listeners:
            for cert in listener.certificates:
                files[f"{cert.id}.pem"] = cert.pem
            if listener.certificates:
                files[f"{listener.id}.pem"] = render_crt_list(self.lb, listener, paths).encode()
        return files

    def _upload_certificates(self, amphora: _AmphoraState, files: dict[str, bytes]) -> None:
        for name, data in files.items():
            md5 = md5_hex(data)
            if self._stored_md5(amphora, name) == md5:
                continue  # already there, as Octavia's driver skips it
            etag = amphora.client.upload_cert(self.lb.id, name, data)
            _check_md5(amphora, name, data, etag)
            amphora.cert_files[name] = md5

    def _stored_md5(self, amphora: _AmphoraState, name: str) -> str | None:
        try:
            return amphora.client.get_cert_md5(self.lb.id, name)
        except AmphoraAPIError as exc:
            if exc.status == 404:
                return None
            raise

    def _delete_stale_certificates(self, amphora: _AmphoraState, files: dict[str, bytes]) -> None:
        for name in sorted(set(amphora.cert_files) - set(files)):
            amphora.client.delete_cert(self.lb.id, name)
            del amphora.cert_files[name]


def vip_firewall_rules(lb: LoadBalancer, peer_vrrp_ips: Sequence[str]) -> list[dict]:
    """The rules document of PUT /1.0/interface/{ip}/rules, built as Octavia's controller does:
    one rule per listener and allowed CIDR (cidr null when the listener allows everyone; all
    our listener protocols are TCP), then VRRP from each peer's address (spelt "vrrp", as
    Octavia does)."""
    rules = [{"protocol": "TCP", "cidr": cidr, "port": listener.port}
             for listener in lb.listeners
             for cidr in (listener.allowed_cidrs or [None])]
    for address in peer_vrrp_ips:
        host = ipaddress.ip_network(address)  # a single address: /32 or /128
        rules.append({"protocol": "vrrp", "cidr": str(host), "port": 112})
    return rules


def _check_md5(amphora: _AmphoraState, what: str, sent: bytes, etag: str) -> None:
    if etag.strip('"') != md5_hex(sent):
        raise ControllerError(
            f"amphora {amphora.amphora_id}: {what} arrived with md5 {etag}, sent {md5_hex(sent)}"
        )
