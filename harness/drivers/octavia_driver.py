"""OpenStack Octavia's own amphora driver behind the driver seam (`octavia`, see
harness.drivers.base): HaproxyAmphoraLoadBalancerDriver in its probe process
(harness.drivers.octavia_process), given our model in Octavia's vocabulary
(harness.drivers.octavia_model), and called in the order Octavia's controller-worker flows
(octavia/controller/worker/v2/flows) call it:

- create (load_balancer_flows.get_create_load_balancer_flow with its listeners): post_vip_plug on
  each amphora; for a pair the VRRP subflow on each amphora (update the VRRP interface from the
  agent, update_vrrp_conf, for an SR-IOV VIP set_interface_rules, start_vrrp_service); then
  post_network_plug of the member ports; update_amphora_listeners on each amphora (upload and
  reload); for an SR-IOV VIP set_interface_rules on each.
- update (the listener/pool/member update flows: ListenersUpdate): update_amphora_listeners on
  each amphora; for an SR-IOV VIP set_interface_rules on each.
- delete (the load balancer delete flow's ListenerDelete tasks): driver.delete(listener) for
  each listener; the last one deletes the load balancer from the amphorae.
- replace_amphora (amphora_flows.get_failover_amphora_flow): on the new amphora post_vip_plug,
  for an SR-IOV VIP set_interface_rules, post_network_plug; update_amphora_listeners on each
  amphora; for a pair the VRRP subflow on each; reload on each.
- rotate_certificate (a listener update with new certificate refs): update.

Certificates go to the probe as secrets, which Octavia's local certificate manager serves.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from harness.amphora_api.client import AmphoraClient
from harness.amphora_api.pki import DriverCredentials
from harness.drivers.base import (
    DriverError,
    StoredFile,
    check_amphorae,
    check_ports,
    paths_for,
    replace_certificate,
)
from harness.drivers.octavia_model import (
    AmphoraAccess,
    AmphoraSpec,
    lb_json,
    role_of,
    subnet_json,
)
from harness.drivers.octavia_process import OctaviaProbe
from harness.lab import reach
from harness.model.loadbalancer import (
    Certificate,
    LoadBalancer,
    MemberPort,
    VipPort,
    VipSubnet,
    VrrpGroup,
)
from harness.render.amphora_configs import AmphoraPaths

# What Octavia renders for a listener without a connection limit ([haproxy_amphora]
# default_connection_limit), and what haproxy needs for it: it refuses to start when it cannot
# get about this many open files per connection of its global maxconn (the sum over listeners).
OCTAVIA_DEFAULT_CONNECTION_LIMIT = 50000
FILES_PER_CONNECTION = 3
# Unlimited listeners one load balancer may have and still start under a lowered limit.
UNLIMITED_LISTENERS = 3
# The RAM of an amphora VM (the flavor Octavia's devstack plugin makes: 1024 MB). Octavia sizes
# haproxy's TLS session cache from the free memory /1.0/details reports (2/5 of it,
# octavia/common/jinja/haproxy/combined_listeners/jinja_cfg.py), and haproxy fills that cache
# before it serves: sized from a 24 GB host, 38 s and 8.7 GB, past the agent's start timeout.
AMPHORA_VM_MEMORY_KB = 1024 * 1024
# /1.0/details memory fields that make up the free memory Octavia counts.
AVAILABLE_MEMORY_FIELDS = ("free", "buffers", "cached")


class OctaviaLimitWarning(UserWarning):
    """The lab changes what Octavia's driver renders because this host's amphorae cannot
    honour it."""


@dataclass(frozen=True)
class AmphoraLimits:
    """Where the lab's amphorae fall short of (or exceed) an amphora VM, what Octavia's driver
    is given instead: default_connection_limit for unlimited listeners, memory_kb as the most
    available memory /1.0/details reports. None: Octavia's value, the agent's answer."""

    default_connection_limit: int | None = None
    memory_kb: int | None = None


def amphora_limits(open_files_limit: int | None, details: dict | None) -> AmphoraLimits:
    """The limits for amphorae that may open at most open_files_limit files (None: unknown)
    and answer /1.0/details with details (None: not asked). Each change is announced with an
    OctaviaLimitWarning that names the limit; a host that fits gets Octavia's values."""
    connection_limit = None
    needed = OCTAVIA_DEFAULT_CONNECTION_LIMIT * FILES_PER_CONNECTION * UNLIMITED_LISTENERS
    if open_files_limit is not None and open_files_limit < needed:
        connection_limit = open_files_limit // (FILES_PER_CONNECTION * UNLIMITED_LISTENERS)
        warnings.warn(OctaviaLimitWarning(
            f"Octavia renders a listener without a connection limit as maxconn "
            f"{OCTAVIA_DEFAULT_CONNECTION_LIMIT} ([haproxy_amphora] default_connection_limit), "
            f"and haproxy needs about {FILES_PER_CONNECTION} open files per connection; the "
            f"amphorae here may open at most {open_files_limit} files (hard RLIMIT_NOFILE), so "
            f"listeners without a limit get maxconn {connection_limit} instead"), stacklevel=2)
    memory_kb = None
    memory = (details or {}).get("memory", {})
    available = sum(memory.get(name, 0) for name in AVAILABLE_MEMORY_FIELDS)
    if available > AMPHORA_VM_MEMORY_KB:
        memory_kb = AMPHORA_VM_MEMORY_KB
        warnings.warn(OctaviaLimitWarning(
            f"the amphorae here report their host's memory ({available} kB free, buffers and "
            f"cache in /1.0/details), from which Octavia sizes haproxy's TLS session cache; "
            f"haproxy would spend longer filling it than the agent waits for a start, so "
            f"Octavia's driver is told of {AMPHORA_VM_MEMORY_KB} kB, an amphora VM's RAM"),
            stacklevel=2)
    return AmphoraLimits(connection_limit, memory_kb)


@dataclass
class _Amphora:
    """An amphora of the load balancer, as Octavia's database holds it."""

    client: AmphoraClient
    spec: AmphoraSpec


def _address(client: AmphoraClient) -> tuple[str, int]:
    parts = urlsplit(client.base_url)
    if parts.hostname is None or parts.port is None:
        raise DriverError(f"no address and port in {client.base_url}")
    return parts.hostname, parts.port


class OctaviaLoadBalancerDriver:
    name = "octavia"

    def __init__(self, probe: OctaviaProbe, lb: LoadBalancer, clients: Sequence[AmphoraClient],
                 credentials: DriverCredentials, *,
                 paths: AmphoraPaths | Mapping[str, AmphoraPaths] | None = None,
                 vrrp_group: VrrpGroup | None = None,
                 limits: AmphoraLimits = AmphoraLimits()) -> None:
        """paths: where the agents keep their files, for all amphorae or per amphora id;
        limits: where the amphorae fall short of an amphora VM (see amphora_limits)."""
        check_amphorae(lb, clients)
        self.probe = probe
        self.lb = lb
        self.vrrp_group = vrrp_group or VrrpGroup()
        self._credentials = credentials
        self._limits = limits
        self._vip_subnet: VipSubnet | None = None
        self._forwarders: list[reach.Forwarder] = []
        # Octavia's database would not delete a deleted load balancer again.
        self._deleted = False
        self._amphorae = [self._amphora(client, paths_for(paths, client.amphora_id),
                                        index=index)
                          for index, client in enumerate(clients)]

    @property
    def clients(self) -> list[AmphoraClient]:
        return [amphora.client for amphora in self._amphorae]

    # --- flows ----------------------------------------------------------------------------

    def create(self, vip_ports: Sequence[VipPort] | None = None,
               member_ports: Sequence[MemberPort] | None = None) -> None:
        check_ports(len(self._amphorae), vip_ports, member_ports)
        if vip_ports is not None:
            for amphora, port in zip(self._amphorae, vip_ports, strict=True):
                self._take_vip_port(amphora, port)
        self._deleted = False
        self._send_model()
        if vip_ports is not None:
            for amphora, port in zip(self._amphorae, vip_ports, strict=True):
                self._call("post_vip_plug", amphora, vrrp_port=_vrrp_port(amphora, port))
        if self.lb.is_pair:
            self._vrrp_subflow()
        if member_ports is not None:
            for amphora, port in zip(self._amphorae, member_ports, strict=True):
                self._call("post_network_plug", amphora, port=_member_port(amphora, port))
        self._update_listeners()

    def update(self) -> None:
        self._deleted = False
        self._send_model()
        self._update_listeners()

    def delete(self) -> None:
        if self._deleted:
            return
        self._send_model()
        for listener in self.lb.listeners:
            for amphora in self._amphorae:
                self._call("delete_listener", amphora, listener_id=listener.id)
        self._deleted = True

    def replace_amphora(self, lost_amphora_id: str, client: AmphoraClient, vip_port: VipPort,
                        member_port: MemberPort | None = None,
                        paths: AmphoraPaths | None = None) -> None:
        lost = next((a for a in self._amphorae if a.spec.id == lost_amphora_id), None)
        if lost is None:
            raise DriverError(f"amphora {lost_amphora_id} does not serve {self.lb.id}")
        new = self._amphora(client, paths or lost.spec.access.paths, role=lost.spec.role)
        self._take_vip_port(new, vip_port)
        self._amphorae[self._amphorae.index(lost)] = new
        self._send_model()
        self._call("post_vip_plug", new, vrrp_port=_vrrp_port(new, vip_port))
        if self.lb.sriov_vip:
            self._call("set_interface_rules", new)
        if member_port is not None:
            self._call("post_network_plug", new, port=_member_port(new, member_port))
        for amphora in self._amphorae:
            self._call("update_amphora_listeners", amphora)
        if self.lb.is_pair:
            self._vrrp_subflow()
        for amphora in self._amphorae:
            self._call("reload", amphora)

    def rotate_certificate(self, old: Certificate, new: Certificate) -> None:
        replace_certificate(self.lb, old, new)
        self.update()

    def adopt(self, vip_ports: Sequence[VipPort]) -> None:
        for amphora, port in zip(self._amphorae, vip_ports, strict=True):
            self._take_vip_port(amphora, port)

    def configure_vrrp(self) -> None:
        self._send_model()
        for amphora in self._amphorae:
            self._call("update_vrrp_interface", amphora)
            self._call("update_vrrp_conf", amphora)

    def certificate_file(self, cert: Certificate) -> StoredFile:
        self._send_model()
        stored = self._call("certificate_file", None, ref=cert.id)
        return StoredFile(stored["name"], stored["md5"])

    def rendered_configs(self) -> dict[str, str]:
        self._send_model()
        configs = {}
        for amphora in self._amphorae:
            info = amphora.client.get_info()
            rendered = self._call("dry_run", amphora, haproxy_version=info["haproxy_version"],
                                  details=amphora.client.get_details())
            configs[amphora.spec.id] = rendered["config"]
        return configs

    def close(self) -> None:
        self.probe.forget(self.lb.id)
        for forwarder in self._forwarders:
            forwarder.close()

    def call(self, method: str, amphora_id: str | None = None, **args) -> object:
        """One of the probe's driver methods by name (octavia_probe.Probe.call), on the current
        model: for tests of Octavia's driver itself (discovery, certificate rotation, ...)."""
        self._send_model()
        return self.probe.call(self.lb.id, method, amphora_id, **args)

    # --- steps ----------------------------------------------------------------------------

    def _update_listeners(self) -> None:
        """ListenersUpdate (upload and reload on each amphora), then an SR-IOV VIP's rules."""
        for amphora in self._amphorae:
            self._call("update_amphora_listeners", amphora)
        if self.lb.sriov_vip:
            for amphora in self._amphorae:
                self._call("set_interface_rules", amphora)

    def _vrrp_subflow(self) -> None:
        """amphora_flows.get_vrrp_subflow, amphora by amphora."""
        for amphora in self._amphorae:
            if amphora.spec.vrrp_ip is None:
                raise DriverError(f"amphora {amphora.spec.id}: VIP not plugged")
            self._call("update_vrrp_interface", amphora)
            self._call("update_vrrp_conf", amphora)
            if self.lb.sriov_vip:
                self._call("set_interface_rules", amphora)
            self._call("start_vrrp_service", amphora)

    def _amphora(self, client: AmphoraClient, paths: AmphoraPaths, *, index: int = 0,
                 role=None) -> _Amphora:
        host, port = _address(client)
        if reach.relay_for(host) is not None:
            # A lab reached through its engine: Octavia's driver, in a process of its own,
            # gets a port on this host's loopback that leads there.
            forwarder = reach.Forwarder(host, port)
            self._forwarders.append(forwarder)
            host, port = forwarder.address, forwarder.port
        access = AmphoraAccess(api_port=port, paths=paths,
                               client_cert=str(self._credentials.client_pem),
                               server_ca=str(self._credentials.ca),
                               default_connection_limit=self._limits.default_connection_limit,
                               memory_kb=self._limits.memory_kb)
        return _Amphora(client, AmphoraSpec(
            id=client.amphora_id, lb_network_ip=host, access=access,
            role=role or role_of(index, self.lb.topology)))

    def _take_vip_port(self, amphora: _Amphora, port: VipPort) -> None:
        amphora.spec = replace(amphora.spec, vrrp_ip=port.vrrp_ip,
                               vrrp_port_id=f"vrrp-port-{amphora.spec.id}")
        self._vip_subnet = port.subnet

    def _send_model(self) -> None:
        self.probe.model(lb_json(self.lb, [a.spec for a in self._amphorae], self._vip_subnet,
                                 self.vrrp_group))

    def _call(self, method: str, amphora: _Amphora | None, **args) -> object:
        return self.probe.call(self.lb.id, method, amphora.spec.id if amphora else None, **args)


def _vrrp_port(amphora: _Amphora, port: VipPort) -> dict:
    """The amphora's VIP-network port as Octavia's network driver describes it."""
    return {"id": amphora.spec.vrrp_port_id, "mac_address": port.mac_address,
            "mtu": port.mtu, "network_id": "vip-network"}


def _member_port(amphora: _Amphora, port: MemberPort) -> dict:
    return {"id": f"member-port-{amphora.spec.id}-{port.mac_address}",
            "mac_address": port.mac_address, "mtu": port.mtu, "network_id": "member-network",
            "fixed_ips": [{"ip_address": port.ip_address,
                           "subnet": subnet_json(port.subnet,
                                                 f"member-subnet-{port.subnet.cidr}")}]}
