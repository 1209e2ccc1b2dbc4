"""A lab: three networks, amphorae, members and clients, on a provider; up and down.

Addresses follow harness.lab.addressing. The lab plugs like a cloud: attach the port (the engine
picks MAC and IP), then tell the agent with plug/vip or plug/network. Teardown runs on down(),
and at interpreter exit and on SIGTERM for a lab that is still up; whatever a killed process
leaves is found by `amphora-harness gc` (harness.lab.cleanup).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
import uuid
import warnings
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv4Network, collapse_addresses
from pathlib import Path

import requests
import tenacity

from harness.amphora_api.client import AmphoraAPIError, AmphoraClient
from harness.amphora_api.pki import LabPKI
from harness.lab import cleanup, reach
from harness.lab.addressing import (
    LAB_ADDRESS_SPACE,
    MAX_LABS,
    NETWORK_ROLES,
    SubnetPlan,
    lab_indexes_on_host,
    subnet_plan,
)
from harness.lab.agent_config import AgentSettings, render_agent_config
from harness.lab.constants import (
    AGENT_CA_PATH,
    AGENT_CONFIG_PATH,
    AGENT_PORT,
    AGENT_SERVER_PEM_PATH,
    DATA_PLANE_MTU,
    MEMBER_PORTS,
    MEMBER_TLS_PATH,
)
from harness.lab.errors import LabError
from harness.lab.host_tables import remove_lab_tables
from harness.lab.octavia_agent import (
    OCTAVIA,
    OCTAVIA_CONFIG_EXTRA,
    OCTAVIA_READY_TIMEOUT_S,
    REINDEX_ARGV,
    haproxy_limit_files,
    haproxy_limit_warning,
)
from harness.lab.providers.base import (
    AddressSpaceTaken,
    AttachedPort,
    Network,
    NetworkSpec,
    Node,
    NodeSpec,
    Provider,
)
from harness.model.loadbalancer import MemberPort, VipPort, VipSubnet
from harness.octavia_source import OctaviaSource, parse_octavia_source
from harness.polling import scaled

READY_TIMEOUT_S = 60.0
# An agent answers within a poll of being up (amphora_ready_s carries half a poll on average);
# a failed poll is a refused connection, cheap. Whether the node still runs is an engine API
# call, asked at most every RUNNING_CHECK_S.
READY_POLL_S = 0.05
RUNNING_CHECK_S = 0.5


@dataclass(frozen=True)
class RelayNode:
    """A lab reached through its engine: the gateway node on its three networks, and the relay
    that opens the harness's connections from inside it."""

    node: Node
    relay: reach.Relay


@dataclass
class LabAmphora:
    id: str
    node: Node
    mgmt_address: IPv4Address
    client: AmphoraClient
    # What its agent config file was rendered from: a controller re-renders it for
    # PUT /1.0/config (heartbeat interval, key, controllers) from this.
    agent_settings: AgentSettings
    # From asking the provider to boot it until /info answered over mutual TLS.
    ready_s: float = 0.0
    ports: list[AttachedPort] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.node.name


@dataclass
class LabMember:
    id: str
    node: Node
    address: IPv4Address

    @property
    def name(self) -> str:
        return self.node.name

    def port(self, service: str) -> int:
        """The port of one of its services: http, https, tcp, udp."""
        return MEMBER_PORTS[service]


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


class Lab:
    """Networks, amphorae, members and clients of one lab. Use as a context manager, or call
    up() and down(); down() is safe to call twice."""

    def __init__(
        self,
        provider: Provider,
        *,
        amphora_image: str | None = None,
        member_image: str | None = None,
        keep: bool = False,
        results_dir: Path | None = None,
        agent: str = "ours",
        octavia_source: OctaviaSource | None = None,
    ) -> None:
        """agent: which amphora-agent the amphorae run, "ours" or "octavia" (OpenStack
        Octavia's, built from octavia_source, default the pinned release; docker provider only).
        amphora_image overrides either."""
        self.id = uuid.uuid4().hex[:8]
        self.provider = provider
        self.keep = keep
        self.results_dir = results_dir
        self.index: int | None = None
        self.networks: dict[str, Network] = {}
        self.amphorae: list[LabAmphora] = []
        self.members: list[LabMember] = []
        self.clients: list[Node] = []
        self._images = {"amphora": amphora_image, "member": member_image}
        self.agent = agent
        self.octavia_source = octavia_source or parse_octavia_source(None)
        self._nodes_per_network = dict.fromkeys(NETWORK_ROLES, 0)
        self._vips = 0
        self._is_down = False
        # Set when the lab is reached through its engine (_reach_from_here).
        self.relay_node: RelayNode | None = None
        self.workdir = cleanup.make_workdir(self.id)
        self.pki = LabPKI(self.workdir / "pki")

    # --- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> Lab:
        return self.up()

    def __exit__(self, *_exc) -> None:
        self.down()

    def up(self) -> Lab:
        cleanup.track(self)
        try:
            self._create_networks()
        except BaseException:
            self.down()
            raise
        return self

    def down(self) -> None:
        """Save every node's log under results_dir, then remove everything (unless keep)."""
        if self._is_down:
            return
        self._is_down = True
        cleanup.forget(self)
        try:
            self._save_logs()
        finally:
            for amphora in self.amphorae:
                amphora.client.close()
            if self.relay_node is not None:
                for network in self._address_blocks():
                    reach.unroute(network)
                self.relay_node.relay.close()
            if not self.keep:
                self.provider.teardown(self.id)
                remove_lab_tables(self.id)  # link faults a failed run left on the host
                shutil.rmtree(self.workdir, ignore_errors=True)

    def _create_networks(self) -> None:
        # Another provider's labs (docker and netns share the host's routing) hold address
        # blocks this provider does not know about: the host's own addresses show them.
        used = self.provider.used_lab_indexes() | lab_indexes_on_host()
        for index in (i for i in range(MAX_LABS) if i not in used):
            try:
                for role in NETWORK_ROLES:
                    plan = subnet_plan(index, role)
                    spec = NetworkSpec(
                        lab_id=self.id, role=role, subnet=plan.subnet, gateway=plan.gateway,
                        dynamic_range=plan.dynamic_range, lab_index=index,
                    )
                    self.networks[role] = self.provider.create_network(spec, keep=self.keep)
            except AddressSpaceTaken:
                # Another lab (or something else) took this block meanwhile: next one.
                self.networks.clear()
                self.provider.teardown(self.id)
                continue
            self.index = index
            self._reach_from_here()
            return
        raise LabError(f"no free address block for a lab in {LAB_ADDRESS_SPACE}")

    def _reach_from_here(self) -> None:
        """The harness reaches a lab through the bridges' gateway addresses when this host holds
        them. An engine on another machine, or in another network namespace, puts them where
        this host has no address: then a gateway node on all three networks opens the
        harness's connections from inside the lab, through the engine's API (harness.lab.reach)."""
        if self.provider.on_this_host(self.networks["lb-mgmt"]):
            return
        spec = self._node_spec(
            "gateway", "lb-mgmt", self._node_address("lb-mgmt"),
            name=f"amphora-harness-{self.id}-gateway", hostname="gateway",
            image=self._image("member"), command=("--id", "gateway"),
        )
        node = self.provider.boot(spec, keep=self.keep)
        ports = {role: self.provider.attach_port(node, self.networks[role])
                 for role in ("vip", "member")}
        relay = reach.Relay(lambda argv: self.provider.open_stream(node, argv),
                            source=ports["vip"].ip_address)
        self.relay_node = RelayNode(node, relay)
        for network in self._address_blocks():
            reach.route(network, relay)

    def _address_blocks(self) -> list[IPv4Network]:
        return list(collapse_addresses(self.plan(role).subnet for role in NETWORK_ROLES))

    def controller_datagrams(self) -> reach.Datagrams:
        """Where the amphorae's controller (heartbeat receiver) gets its datagrams: the host's
        side of lb-mgmt, or, for a lab reached through its engine, its gateway node's."""
        if self.relay_node is None:
            return reach.UdpDatagrams(str(self.gateway("lb-mgmt")))
        return self.relay_node.relay.datagrams(str(self.relay_node.node.spec.address))

    def neighbour_mac(self, address: str) -> str | None:
        """The MAC the harness's side of the lab has for address in its neighbour table (this
        host's, or the gateway node's): which port answered ARP for it last."""
        argv = ["ip", "neigh", "show", "to", address]
        if self.relay_node is None:
            shown = subprocess.run(argv, capture_output=True, text=True, check=False).stdout
        else:
            shown = self.provider.exec(self.relay_node.node, argv).output
        words = shown.split()
        return words[words.index("lladdr") + 1] if "lladdr" in words else None

    def traffic_source(self) -> IPv4Address:
        """The address the harness's traffic to the VIP comes from, as members see it."""
        return self.relay_node.relay.source if self.relay_node else self.gateway("vip")

    def _save_logs(self) -> None:
        if self.results_dir is None:
            return
        directory = self.results_dir / self.id
        for node in [a.node for a in self.amphorae] + [m.node for m in self.members] + \
                self.clients:
            with contextlib.suppress(Exception):  # a node already gone has no log to save
                text = self.provider.logs(node)
                directory.mkdir(parents=True, exist_ok=True)
                (directory / f"{node.name}.log").write_text(text)

    # --- addressing -----------------------------------------------------------------------

    def plan(self, role: str) -> SubnetPlan:
        if self.index is None:
            raise LabError("the lab is not up")
        return subnet_plan(self.index, role)

    def gateway(self, role: str) -> IPv4Address:
        """The host's address on a lab network (where host-side services listen)."""
        return self.plan(role).gateway

    def allocate_vip(self) -> IPv4Address:
        address = self.plan("vip").vip_address(self._vips)
        self._vips += 1
        return address

    def _node_address(self, role: str) -> IPv4Address:
        address = self.plan(role).node_address(self._nodes_per_network[role])
        self._nodes_per_network[role] += 1
        return address

    def _image(self, name: str) -> str:
        if self._images[name] is None:
            if name == "amphora" and self.agent == OCTAVIA:
                self._images[name] = self.provider.ensure_octavia_image(self.octavia_source)
            else:
                self._images[name] = self.provider.ensure_image(name)
        return self._images[name]

    def _node_spec(self, role: str, network_role: str, address: IPv4Address,
                   **fields) -> NodeSpec:
        return NodeSpec(lab_id=self.id, role=role, network=self.networks[network_role],
                        address=address, **fields)

    # --- amphorae -------------------------------------------------------------------------

    def add_amphorae(self, count: int, **agent_settings) -> list[LabAmphora]:
        """Boot count amphorae and wait until every agent answers. agent_settings override
        harness.lab.agent_config.AgentSettings fields (topology, controllers, heartbeat_key,
        ...)."""
        # All boot first, then all are waited for: boots overlap.
        booted = [self._boot_amphora(**agent_settings) for _ in range(count)]
        for amphora, started in booted:
            self._wait_ready(amphora, started)
        return [amphora for amphora, _ in booted]

    def add_amphora(self, **agent_settings) -> LabAmphora:
        return self.add_amphorae(1, **agent_settings)[0]

    def _boot_amphora(self, **agent_settings) -> tuple[LabAmphora, float]:
        amphora_id = str(uuid.uuid4())
        address = self._node_address("lb-mgmt")
        credentials = self.pki.amphora(amphora_id)
        is_octavia = self.agent == OCTAVIA
        settings = replace(AgentSettings(
            amphora_id=amphora_id, ca_path=AGENT_CA_PATH, server_pem_path=AGENT_SERVER_PEM_PATH,
            bind_host=str(address), bind_port=AGENT_PORT,
        ), **self._agent_settings(agent_settings))
        spec = self._node_spec(
            "amphora", "lb-mgmt", address,
            name=f"amphora-harness-{self.id}-amphora-{len(self.amphorae)}",
            hostname=f"amphora-{amphora_id}",
            image=self._image("amphora"),
            data_plane_privileges=True,
            systemd_init=is_octavia,
            files={
                AGENT_CONFIG_PATH: render_agent_config(settings).encode(),
                AGENT_CA_PATH: credentials.ca.read_bytes(),
                AGENT_SERVER_PEM_PATH: credentials.server_pem.read_bytes(),
            },
        )
        started = time.monotonic()
        node = self.provider.boot(spec, keep=self.keep)
        if is_octavia:
            self._fit_haproxy_limits(node)
        client = AmphoraClient(str(spec.address), AGENT_PORT, amphora_id, self.pki.driver)
        amphora = LabAmphora(id=amphora_id, node=node, mgmt_address=spec.address, client=client,
                             agent_settings=settings)
        # Registered before it is ready, so a failure still saves its log and tears it down.
        self.amphorae.append(amphora)
        return amphora, started

    def _agent_settings(self, asked: dict) -> dict:
        """The AgentSettings fields an amphora of this lab's agent gets for those asked:
        Octavia's agent also gets the options its controller writes (OCTAVIA_CONFIG_EXTRA)."""
        if self.agent != OCTAVIA:
            return dict(asked)
        return {**asked, "extra": {**OCTAVIA_CONFIG_EXTRA, **asked.get("extra", {})}}

    def _fit_haproxy_limits(self, node: Node) -> None:
        """Octavia's haproxy units ask for more open files than some hosts grant: there the
        lab lowers them, with a drop-in and a warning naming the limit (harness.lab.
        octavia_agent); a host that grants Octavia's value gets it unchanged."""
        shown = self.provider.exec(node, ["sh", "-c", "ulimit -Hn"]).output.strip()
        hard = 1 << 62 if shown == "unlimited" else int(shown)
        files = haproxy_limit_files(hard)
        if files:
            warnings.warn(haproxy_limit_warning(hard), stacklevel=3)
            self.provider.put_files(node, files)

    def _wait_ready(self, amphora: LabAmphora, started: float) -> None:
        probe = AmphoraClient(
            str(amphora.mgmt_address), AGENT_PORT, amphora.id, self.pki.driver,
            connect_timeout=2.0, read_timeout=5.0, retries=1,
        )
        with probe:
            self._wait_until(amphora.node, probe.get_info,
                             (requests.RequestException, AmphoraAPIError),
                             OCTAVIA_READY_TIMEOUT_S if self.agent == OCTAVIA
                             else READY_TIMEOUT_S)
        amphora.ready_s = time.monotonic() - started

    def _wait_until(self, node: Node, check, retried: tuple[type[Exception], ...],
                    timeout_s: float = READY_TIMEOUT_S) -> None:
        """Retry check until it passes; fail within RUNNING_CHECK_S if the node stops, with its
        log."""
        checked_running = [-RUNNING_CHECK_S]

        def attempt() -> None:
            now = time.monotonic()
            if now - checked_running[0] >= RUNNING_CHECK_S:
                checked_running[0] = now
                if not self.provider.is_running(node):
                    raise LabError(f"{node.name} stopped while booting; its log:\n"
                                   f"{_tail(self.provider.logs(node))}")
            check()

        try:
            tenacity.Retrying(
                retry=tenacity.retry_if_exception_type(retried),
                stop=tenacity.stop_after_delay(scaled(timeout_s)),
                wait=tenacity.wait_fixed(READY_POLL_S),
                reraise=True,
            )(attempt)
        except retried as exc:
            raise LabError(
                f"{node.name} not ready after {scaled(timeout_s):.0f}s ({exc}); its log:\n"
                f"{_tail(self.provider.logs(node))}"
            ) from exc

    # --- members and clients ----------------------------------------------------------------

    def add_members(self, count: int) -> list[LabMember]:
        """Boot count members (HTTP, HTTPS, TCP and UDP services) on the member network."""
        booted = []
        for _ in range(count):
            member_id = str(uuid.uuid4())
            tls = self.pki.ca.issue(member_id, dns_names=(member_id,))
            spec = self._node_spec(
                "member", "member", self._node_address("member"),
                name=f"amphora-harness-{self.id}-member-{len(self.members)}",
                hostname=f"member-{member_id[:8]}",
                image=self._image("member"),
                command=("--id", member_id, "--tls-pem", MEMBER_TLS_PATH),
                files={MEMBER_TLS_PATH: tls.bundle},
            )
            member = LabMember(id=member_id, node=self.provider.boot(spec, keep=self.keep),
                               address=spec.address)
            self.members.append(member)
            booted.append(member)
        for member in booted:
            url = f"http://{member.address}:{member.port('http')}/"
            self._wait_until(member.node, lambda u=url: requests.get(u, timeout=2)
                             .raise_for_status(), (requests.RequestException,))
        return booted

    def add_client(self) -> Node:
        """A node on the VIP network (a tenant's client VM): the member image, so it has
        python3 for probes, and answers as member 'client-N' if anything asks."""
        label = self._client_label(len(self.clients))
        spec = self._node_spec(
            "client", "vip", self._node_address("vip"),
            name=f"amphora-harness-{self.id}-{label}",
            hostname=label,
            image=self._image("member"),
            command=("--id", label),
        )
        node = self.provider.boot(spec, keep=self.keep)
        self.clients.append(node)
        return node

    def _client_label(self, number: int) -> str:
        return f"client-{number}"

    def can_connect(self, node: Node, address: IPv4Address | str, port: int,
                    timeout_s: float = 3.0) -> bool:
        """Whether a TCP connection from inside node to address:port succeeds."""
        probe = ("import socket, sys\n"
                 "socket.create_connection((sys.argv[1], int(sys.argv[2])),"
                 " timeout=float(sys.argv[3])).close()")
        result = self.provider.exec(
            node, ["python3", "-c", probe, str(address), str(port), str(timeout_s)])
        return result.ok

    # --- plugging, as a cloud does it ---------------------------------------------------------

    def attach_port(self, amphora: LabAmphora, network_role: str) -> AttachedPort:
        """The cloud's half of a hot-plug: a new port on that network, attached to the running
        amphora (the engine picks its MAC and fixed IP). The agent knows nothing of it yet."""
        port = self.provider.attach_port(amphora.node, self.networks[network_role])
        amphora.ports.append(port)
        if self.agent == OCTAVIA:
            result = self.provider.exec(amphora.node, [*REINDEX_ARGV, port.mac_address])
            if not result.ok:
                raise LabError(f"{amphora.name}: giving port {port.mac_address} a small "
                               f"interface index failed: {result.output.strip()}")
        return port

    def attach_vip_port(self, amphora: LabAmphora) -> VipPort:
        """The cloud's half of a VIP port, described as a controller learns it (MAC, fixed IP,
        subnet, MTU): for flows that POST plug/vip themselves through harness.drivers.controller."""
        return self._vip_port(self.attach_port(amphora, "vip"))

    def plug_vip(self, amphora: LabAmphora, vip: IPv4Address | None = None, *,
                 additional_vips: tuple[IPv4Address, ...] = ()) -> AttachedPort:
        """Attach a port on the VIP network (its fixed IP becomes the amphora's vrrp_ip), then
        POST plug/vip with the port's MAC. vip defaults to a newly allocated one."""
        vip = vip or self.allocate_vip()
        port = self.attach_port(amphora, "vip")
        amphora.client.plug_vip(str(vip), self._vip_port(port).plug_request(
            additional_vips=tuple(map(str, additional_vips))))
        return port

    def _vip_port(self, port: AttachedPort) -> VipPort:
        plan = self.plan("vip")
        return VipPort(mac_address=port.mac_address, vrrp_ip=str(port.ip_address),
                       subnet=VipSubnet(cidr=str(plan.subnet), gateway=str(plan.gateway)),
                       mtu=DATA_PLANE_MTU)

    def attach_member_port(self, amphora: LabAmphora) -> MemberPort:
        """The cloud's half of a member-network port, described as a controller learns it (MAC,
        fixed IP, subnet, MTU): for flows that POST plug/network themselves (harness.drivers)."""
        return self._member_port(self.attach_port(amphora, "member"))

    def plug_member_network(self, amphora: LabAmphora) -> AttachedPort:
        """Attach a port on the member network, then POST plug/network with its MAC and IP."""
        port = self.attach_port(amphora, "member")
        amphora.client.plug_network(self._member_port(port).plug_request())
        return port

    def _member_port(self, port: AttachedPort) -> MemberPort:
        return MemberPort(mac_address=port.mac_address, ip_address=str(port.ip_address),
                          subnet=VipSubnet(cidr=str(self.plan("member").subnet)),
                          mtu=DATA_PLANE_MTU)
