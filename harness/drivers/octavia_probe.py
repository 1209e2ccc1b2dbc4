"""OpenStack Octavia's own amphora driver, driven by harness.drivers.octavia_driver.

This runs under a Python that has Octavia installed (a virtualenv of its own, see
harness.drivers.octavia_venv), never the project's: it imports nothing of ours, so what reaches
an agent is exactly what Octavia's HaproxyAmphoraLoadBalancerDriver sends — its REST client, its
TLS settings, its jinja templates for haproxy.cfg and keepalived.conf.

Protocol: one JSON object per line on stdin, one JSON answer per line on stdout.
  {"op": "configure", "settings": {GROUP: {OPTION: VALUE}}}   Octavia's config options
  {"op": "model", "lb": SPEC}          a load balancer in Octavia's vocabulary (see build_model);
                                       kept by its id, replacing an earlier one of that id
  {"op": "forget", "lb_id": ID}
  {"op": "call", "lb_id": ID, "method": NAME, "amphora": AMPHORA_ID, "args": {...}}
Answers are {"ok": true, "result": ...} or {"ok": false, "error": "Type: message (at file:line)"}.

Certificates reach the driver through Octavia's own local certificate manager (no Barbican):
the model's `secrets` are written where [certificates] storage_path points, a directory of this
process's own, as {ref}.crt, {ref}.key and {ref}.int.

Methods are Octavia's driver methods and the steps of Octavia's flows that call them (the
caller runs them in the flows' order); `dry_run` renders what update_amphora_listeners would
send without sending it (for comparing renderers).
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
import traceback
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")  # eventlet and oslo deprecation noise on stderr

from octavia.amphorae.drivers.haproxy import exceptions as driver_exceptions  # noqa: E402
from octavia.amphorae.drivers.haproxy import rest_api_driver  # noqa: E402
from octavia.common import constants, data_models  # noqa: E402
from octavia.common import utils as octavia_utils  # noqa: E402
from octavia.common.tls_utils import cert_parser  # noqa: E402
from octavia.network import data_models as network_models  # noqa: E402
from oslo_config import cfg  # noqa: E402

CONF = cfg.CONF
PROJECT_ID = "amphora-harness"
API_VERSION = "1.0"
# [haproxy_amphora] options that come with each amphora: how to reach its agent and where the
# agent keeps its files. Octavia assumes one set for all amphorae; agents sharing a host, or
# amphorae of different labs, differ, so the driver is set up again when the next amphora has
# another set.
LAYOUT_OPTIONS = {"api_port": "bind_port", "base_path": "base_path",
                  "base_cert_dir": "base_cert_dir", "client_cert": "client_cert",
                  "server_ca": "server_ca", "default_connection_limit": "default_connection_limit"}
# /1.0/details memory fields Octavia's templater adds up (for tune.ssl.cachesize).
AVAILABLE_MEMORY_FIELDS = ("free", "buffers", "cached")
# [keepalived_vrrp] options a load balancer's VRRP settings map to.
VRRP_OPTIONS = {"check_interval": "vrrp_check_interval", "fail_count": "vrrp_fail_count",
                "success_count": "vrrp_success_count",
                "garp_refresh": "vrrp_garp_refresh_interval",
                "garp_refresh_repeat": "vrrp_garp_refresh_count"}


# --- the model ---------------------------------------------------------------------------------


def subnet_model(spec: dict) -> network_models.Subnet:
    return network_models.Subnet(
        id=spec.get("id"), cidr=spec["cidr"], gateway_ip=spec.get("gateway_ip"),
        host_routes=[network_models.HostRoute(nexthop=r["nexthop"],
                                              destination=r["destination"])
                     for r in spec.get("host_routes", [])])


def subnet_dict(spec: dict) -> dict:
    """A subnet as Octavia's network driver hands it to the VRRP templater."""
    return {"id": spec.get("id"), "cidr": spec["cidr"], "gateway_ip": spec.get("gateway_ip"),
            "host_routes": [dict(r) for r in spec.get("host_routes", [])]}


def member_model(spec: dict, pool: data_models.Pool) -> data_models.Member:
    return data_models.Member(
        id=spec["id"], project_id=PROJECT_ID, pool_id=pool.id, pool=pool,
        ip_address=spec["address"], protocol_port=spec["protocol_port"],
        weight=spec.get("weight", 1), backup=spec.get("backup", False),
        enabled=spec.get("enabled", True), monitor_address=spec.get("monitor_address"),
        monitor_port=spec.get("monitor_port"), subnet_id=spec.get("subnet_id"),
        provisioning_status=constants.ACTIVE, operating_status=constants.ONLINE)


def pool_model(spec: dict, lb: data_models.LoadBalancer) -> data_models.Pool:
    pool = data_models.Pool(
        id=spec["id"], project_id=PROJECT_ID, protocol=spec["protocol"],
        lb_algorithm=spec.get("lb_algorithm", constants.LB_ALGORITHM_ROUND_ROBIN),
        enabled=spec.get("enabled", True), load_balancer=lb, load_balancer_id=lb.id,
        members=[], listeners=[], l7policies=[], provisioning_status=constants.ACTIVE,
        operating_status=constants.ONLINE, tls_enabled=spec.get("tls_enabled", False),
        tls_certificate_id=spec.get("tls_certificate_id"),
        ca_tls_certificate_id=spec.get("ca_tls_certificate_id"),
        crl_container_id=spec.get("crl_container_id"), tls_ciphers=spec.get("tls_ciphers"),
        tls_versions=spec.get("tls_versions"), alpn_protocols=spec.get("alpn_protocols"))
    pool.members = [member_model(member, pool) for member in spec.get("members", [])]
    persistence = spec.get("session_persistence")
    if persistence:
        pool.session_persistence = data_models.SessionPersistence(
            pool_id=pool.id, pool=pool, type=persistence["type"],
            cookie_name=persistence.get("cookie_name"))
    monitor = spec.get("health_monitor")
    if monitor:
        pool.health_monitor = data_models.HealthMonitor(
            id=monitor["id"], project_id=PROJECT_ID, pool_id=pool.id, pool=pool,
            type=monitor["type"], delay=monitor["delay"], timeout=monitor["timeout"],
            fall_threshold=monitor["max_retries_down"], rise_threshold=monitor["max_retries"],
            http_method=monitor.get("http_method"), url_path=monitor.get("url_path"),
            expected_codes=monitor.get("expected_codes"),
            http_version=monitor.get("http_version"), domain_name=monitor.get("domain_name"),
            enabled=monitor.get("enabled", True), provisioning_status=constants.ACTIVE,
            operating_status=constants.ONLINE)
    return pool


def l7policy_model(spec: dict, listener: data_models.Listener,
                   pools: dict[str, data_models.Pool]) -> data_models.L7Policy:
    redirect_pool = pools.get(spec.get("redirect_pool_id"))
    policy = data_models.L7Policy(
        id=spec["id"], project_id=PROJECT_ID, listener_id=listener.id, listener=listener,
        action=spec["action"], position=spec.get("position", 1),
        redirect_pool_id=redirect_pool.id if redirect_pool else None,
        redirect_pool=redirect_pool, redirect_url=spec.get("redirect_url"),
        redirect_prefix=spec.get("redirect_prefix"),
        redirect_http_code=spec.get("redirect_http_code"), enabled=spec.get("enabled", True),
        l7rules=[], provisioning_status=constants.ACTIVE, operating_status=constants.ONLINE)
    policy.l7rules = [data_models.L7Rule(
        id=rule["id"], project_id=PROJECT_ID, l7policy_id=policy.id, l7policy=policy,
        type=rule["type"], compare_type=rule["compare_type"], key=rule.get("key"),
        value=rule["value"], invert=rule.get("invert", False), enabled=rule.get("enabled", True),
        provisioning_status=constants.ACTIVE, operating_status=constants.ONLINE)
        for rule in spec.get("rules", [])]
    if redirect_pool is not None:
        redirect_pool.l7policies.append(policy)
    return policy


def listener_model(spec: dict, lb: data_models.LoadBalancer,
                   pools: dict[str, data_models.Pool]) -> data_models.Listener:
    listener = data_models.Listener(
        id=spec["id"], project_id=PROJECT_ID, load_balancer=lb, load_balancer_id=lb.id,
        protocol=spec["protocol"], protocol_port=spec["protocol_port"],
        connection_limit=spec.get("connection_limit", -1), enabled=spec.get("enabled", True),
        provisioning_status=constants.ACTIVE, operating_status=constants.ONLINE,
        insert_headers=dict(spec.get("insert_headers", {})),
        timeout_client_data=spec.get("timeout_client_data"),
        timeout_member_connect=spec.get("timeout_member_connect"),
        timeout_member_data=spec.get("timeout_member_data"),
        timeout_tcp_inspect=spec.get("timeout_tcp_inspect"),
        tls_certificate_id=spec.get("tls_certificate_id"),
        client_ca_tls_certificate_id=spec.get("client_ca_tls_certificate_id"),
        client_authentication=spec.get("client_authentication", constants.CLIENT_AUTH_NONE),
        client_crl_container_id=spec.get("client_crl_container_id"),
        tls_ciphers=spec.get("tls_ciphers"), tls_versions=spec.get("tls_versions"),
        alpn_protocols=spec.get("alpn_protocols"), hsts_max_age=spec.get("hsts_max_age"),
        hsts_include_subdomains=spec.get("hsts_include_subdomains", False),
        hsts_preload=spec.get("hsts_preload", False), peer_port=spec.get("peer_port"),
        pools=[pools[pool_id] for pool_id in spec.get("pool_ids", [])], l7policies=[],
        allowed_cidrs=[])
    listener.allowed_cidrs = [data_models.ListenerCidr(listener_id=listener.id, cidr=cidr)
                              for cidr in spec.get("allowed_cidrs", [])]
    listener.sni_containers = [
        data_models.SNI(listener_id=listener.id, listener=listener, position=position,
                        tls_container_id=ref)
        for position, ref in enumerate(spec.get("sni_container_ids", []))]
    if spec.get("default_pool_id"):
        listener.default_pool = pools[spec["default_pool_id"]]
        listener.default_pool_id = listener.default_pool.id
    for pool in listener.pools:
        pool.listeners.append(listener)
    listener.l7policies = [l7policy_model(policy, listener, pools)
                           for policy in sorted(spec.get("l7policies", []),
                                                key=lambda p: p.get("position", 1))]
    return listener


def amphora_model(spec: dict, lb: data_models.LoadBalancer, vrrp_id: int) -> data_models.Amphora:
    return data_models.Amphora(
        id=spec["id"], load_balancer=lb, load_balancer_id=lb.id,
        status=constants.AMPHORA_ALLOCATED, lb_network_ip=spec["lb_network_ip"],
        vrrp_ip=spec.get("vrrp_ip"), ha_ip=lb.vip.ip_address, role=spec.get(
            "role", constants.ROLE_STANDALONE), vrrp_id=vrrp_id,
        vrrp_priority=spec.get("vrrp_priority"), vrrp_port_id=spec.get("vrrp_port_id"))


class Model:
    """One load balancer as Octavia's data models, with what the flows know beside them (the
    VIP subnet, the amphorae's layouts, the VRRP settings)."""

    def __init__(self, spec: dict) -> None:
        self.spec = spec
        vip = spec["vip"]
        self.vip_subnet = vip.get("subnet")  # unknown until the VIP port is plugged
        self.additional_vips = spec.get("additional_vips", [])
        vrrp = spec.get("vrrp", {})
        self.vrrp_options = {option: vrrp[name] for name, option in VRRP_OPTIONS.items()
                             if name in vrrp}
        lb = data_models.LoadBalancer(
            id=spec["id"], project_id=PROJECT_ID, enabled=True,
            topology=spec.get("topology", constants.TOPOLOGY_SINGLE),
            provisioning_status=constants.ACTIVE, operating_status=constants.ONLINE,
            vip=data_models.Vip(load_balancer_id=spec["id"], ip_address=vip["ip_address"],
                                subnet_id=(vip.get("subnet") or {}).get("id"),
                                vnic_type=vip.get("vnic_type", constants.VNIC_TYPE_NORMAL)),
            additional_vips=[data_models.AdditionalVip(
                load_balancer_id=spec["id"], ip_address=item["ip_address"],
                subnet_id=item["subnet"].get("id")) for item in self.additional_vips],
            amphorae=[], listeners=[], pools=[],
            vrrp_group=data_models.VRRPGroup(
                load_balancer_id=spec["id"],
                vrrp_group_name=vrrp.get("group_name", spec["id"].replace("-", "")),
                vrrp_auth_type=constants.VRRP_AUTH_DEFAULT,
                vrrp_auth_pass=vrrp.get("auth_pass", spec["id"].replace("-", "")[:8]),
                advert_int=vrrp.get("advert_int", 1)))
        pools = {item["id"]: pool_model(item, lb) for item in spec.get("pools", [])}
        lb.pools = list(pools.values())
        lb.listeners = [listener_model(item, lb, pools) for item in spec.get("listeners", [])]
        vrrp_id = vrrp.get("vrrp_id", 1)
        lb.amphorae = [amphora_model(item, lb, vrrp_id) for item in spec["amphorae"]]
        self.lb = lb
        # Listeners driver.delete took off the load balancer, for its call on the next amphora.
        self.deleted_listeners: dict[str, data_models.Listener] = {}
        self.layouts = {item["id"]: {name: item[name] for name in LAYOUT_OPTIONS
                                     if item.get(name) is not None}
                        for item in spec["amphorae"]}
        self.memory_kb = {item["id"]: item["memory_kb"] for item in spec["amphorae"]
                          if item.get("memory_kb") is not None}

    def amphora(self, amphora_id: str) -> data_models.Amphora:
        for amphora in self.lb.amphorae:
            if amphora.id == amphora_id:
                return amphora
        raise KeyError(f"amphora {amphora_id} is not one of load balancer {self.lb.id}")

    def network_config(self) -> dict:
        """amphorae_network_config, as Octavia's network driver gives it to the flows."""
        if self.vip_subnet is None:
            raise ValueError(f"load balancer {self.lb.id}: the VIP subnet is not known (no VIP "
                             "port was plugged)")
        additional = [{"ip_address": item["ip_address"], "subnet": subnet_dict(item["subnet"])}
                      for item in self.additional_vips]
        return {amp.id: {constants.VIP_SUBNET: subnet_dict(self.vip_subnet),
                         "additional_vip_data": additional}
                for amp in self.lb.amphorae}

    def additional_vip_data(self) -> list[network_models.AdditionalVipData]:
        return [network_models.AdditionalVipData(ip_address=item["ip_address"],
                                                 subnet=subnet_model(item["subnet"]))
                for item in self.additional_vips]

    def firewall_rules(self, amphora: data_models.Amphora) -> list[dict]:
        """What Octavia's GetAmphoraFirewallRules task builds for an SR-IOV VIP: a rule per
        listener and allowed CIDR (none: cidr null), then VRRP from each allocated peer."""
        rules = []
        for listener in self.lb.listeners:
            for cidr in [item.cidr for item in listener.allowed_cidrs] or [None]:
                rules.append(octavia_utils.map_protocol_to_nftable_protocol({
                    constants.PROTOCOL: listener.protocol, constants.CIDR: cidr,
                    constants.PORT: listener.protocol_port}))
        if self.lb.topology == constants.TOPOLOGY_ACTIVE_STANDBY:
            for peer in self.lb.amphorae:
                if peer.id != amphora.id and peer.status == constants.AMPHORA_ALLOCATED:
                    prefix = 128 if octavia_utils.is_ipv6(peer.vrrp_ip) else 32
                    rules.append({constants.PROTOCOL: constants.VRRP,
                                  constants.CIDR: f"{peer.vrrp_ip}/{prefix}",
                                  constants.PORT: 112})
        return rules


def port_model(spec: dict) -> network_models.Port:
    """A port as Octavia's network driver describes it: MAC, network MTU, fixed IPs with their
    subnets."""
    return network_models.Port(
        id=spec["id"], mac_address=spec["mac_address"],
        vnic_type=spec.get("vnic_type", constants.VNIC_TYPE_NORMAL),
        network=network_models.Network(id=spec.get("network_id"), mtu=spec.get("mtu")),
        fixed_ips=[network_models.FixedIP(subnet_id=item["subnet"].get("id"),
                                          ip_address=item["ip_address"],
                                          subnet=subnet_model(item["subnet"]))
                   for item in spec.get("fixed_ips", [])])


class MemoryCappingClient:
    """The driver's REST client, except that /details reports at most memory_kb[amphora id] of
    available memory: an amphora VM's RAM, where the lab's amphora sees its host's (the caller
    says so when it asks for a cap)."""

    def __init__(self, client, memory_kb: dict[str, int]) -> None:
        self._client = client
        self._memory_kb = memory_kb

    def __getattr__(self, name: str):
        return getattr(self._client, name)

    def get_details(self, amphora, *args, **kwargs) -> dict:
        details = self._client.get_details(amphora, *args, **kwargs)
        cap = self._memory_kb.get(amphora.id)
        memory = details.get("memory", {})
        if cap is not None and sum(memory.get(f, 0) for f in AVAILABLE_MEMORY_FIELDS) > cap:
            details["memory"] = {**memory, "free": cap, "buffers": 0, "cached": 0}
        return details


# --- dry runs: what the driver would send, not sent -------------------------------------------


class CapturingClient:
    """Stands in for the driver's REST client in a dry run: answers what the driver reads with
    the given values, keeps what it would upload, sends nothing."""

    def __init__(self, haproxy_version: str, details: dict) -> None:
        self.info = {"api_version": API_VERSION, "haproxy_version": haproxy_version}
        self.details = details
        self.config: str | None = None
        self.files: dict[str, str] = {}

    def get_api_version(self, amphora, **_options) -> dict:
        return {"api_version": API_VERSION}

    def get_info(self, amphora, **_options) -> dict:
        return self.info

    def get_details(self, amphora, **_options) -> dict:
        return self.details

    def get_cert_md5sum(self, amphora, lb_id, name, **_options):
        raise driver_exceptions.NotFound()

    def upload_cert_pem(self, amphora, lb_id, name, pem, **_options) -> None:
        self.files[name] = hashlib.md5(pem, usedforsecurity=False).hexdigest()

    def upload_config(self, amphora, lb_id, config, **_options) -> None:
        self.config = config.decode() if isinstance(config, bytes) else config

    def reload_listener(self, amphora, object_id, **_options) -> None:
        pass

    def delete_listener(self, amphora, object_id, **_options) -> None:
        self.config = None


# --- the probe ---------------------------------------------------------------------------------


class Probe:
    def __init__(self, storage: Path) -> None:
        self.storage = storage
        self.layout: dict | None = None
        self.driver: rest_api_driver.HaproxyAmphoraLoadBalancerDriver | None = None
        self.models: dict[str, Model] = {}

    def configure(self, settings: dict) -> None:
        CONF([], project="octavia", default_config_files=[])
        self._apply({**settings, "certificates": {
            **settings.get("certificates", {}), "cert_manager": "local_cert_manager",
            "storage_path": str(self.storage)}})
        self.layout = None
        self.driver = rest_api_driver.HaproxyAmphoraLoadBalancerDriver()

    def model(self, spec: dict) -> None:
        for ref, secret in spec.get("secrets", {}).items():
            self._store_secret(ref, secret)
        self.models[spec["id"]] = Model(spec)

    def forget(self, lb_id: str) -> None:
        self.models.pop(lb_id, None)

    def call(self, lb_id: str, method: str, amphora_id: str | None, args: dict):
        model = self.models[lb_id]
        amphora = model.amphora(amphora_id) if amphora_id else None
        driver = self._driver_for(model, amphora)
        lb = model.lb
        if method == "firewall_rules":
            return model.firewall_rules(amphora)
        if method == "dry_run":
            return self._dry_run(driver, model, amphora, args["haproxy_version"],
                                 args["details"])
        if method == "certificate_file":
            return self._certificate_file(args["ref"])
        if method == "check":
            return driver.check(amphora)
        if method == "get_info":
            return driver.get_info(amphora)
        if method == "post_vip_plug":
            port = port_model(args["vrrp_port"])
            amphora.vrrp_port_id = port.id
            return driver.post_vip_plug(amphora, lb, model.network_config(), port,
                                        subnet_model(model.vip_subnet),
                                        additional_vip_data=model.additional_vip_data())
        if method == "post_network_plug":
            # The network config matters only for the VIP port itself (then it is known).
            config = model.network_config()[amphora.id] if model.vip_subnet else {}
            return driver.post_network_plug(amphora, port_model(args["port"]), config)
        if method == "update_amphora_listeners":
            return driver.update_amphora_listeners(lb, amphora)
        if method in ("start", "reload"):
            return getattr(driver, method)(lb, amphora)
        if method == "delete_listener":
            return self._delete_listener(driver, model, amphora, args["listener_id"])
        if method == "update_vrrp_interface":
            # Octavia's flow asks the amphora which interface carries its VRRP address.
            amphora.vrrp_interface = driver.get_interface_from_ip(amphora, amphora.vrrp_ip)
            return amphora.vrrp_interface
        if method == "update_vrrp_conf":
            self._apply({"keepalived_vrrp": model.vrrp_options})
            return driver.update_vrrp_conf(lb, model.network_config(), amphora)
        if method == "start_vrrp_service":
            return driver.start_vrrp_service(amphora)
        if method == "stop_vrrp_service":
            return driver.stop_vrrp_service_on_amphora(amphora)
        if method == "set_interface_rules":
            rules = args.get("rules", model.firewall_rules(amphora))
            driver.set_interface_rules(amphora, amphora.vrrp_ip, rules)
            return rules
        if method == "get_interface_from_ip":
            return driver.get_interface_from_ip(amphora, args["ip"])
        if method == "upload_cert_amp":
            return driver.upload_cert_amp(amphora, args["pem"].encode())
        if method == "update_amphora_agent_config":
            return driver.update_amphora_agent_config(amphora, args["config"].encode())
        if method == "client":
            # A REST client call the driver makes inside its flows, by name (e.g. get_details).
            driver.check(amphora)  # version discovery, as the driver does before each call
            client = driver.clients[amphora.api_version]
            return getattr(client, args["name"])(amphora, *args.get("args", []))
        raise ValueError(f"unknown method {method}")

    # --- helpers -------------------------------------------------------------------------

    def _apply(self, settings: dict) -> None:
        for group, options in settings.items():
            for name, value in options.items():
                CONF.set_override(name, value, group=group)

    def _driver_for(self, model: Model, amphora: data_models.Amphora | None):
        """The driver, set up for the amphora's layout (the last one used when none is named)."""
        if self.driver is None:
            raise RuntimeError("the probe is not configured")
        if amphora is not None:
            layout = model.layouts.get(amphora.id, {})
            if layout != self.layout:
                self._apply({"haproxy_amphora": {LAYOUT_OPTIONS[name]: value
                                                 for name, value in layout.items()}})
                self.driver = rest_api_driver.HaproxyAmphoraLoadBalancerDriver()
                self.layout = layout
            self.driver.clients[API_VERSION] = MemoryCappingClient(
                self._rest_client(), model.memory_kb)
        return self.driver

    def _rest_client(self):
        client = self.driver.clients[API_VERSION]
        return client._client if isinstance(client, MemoryCappingClient) else client

    def _store_secret(self, ref: str, secret: dict) -> None:
        """A certificate container ({certificate, private_key, intermediates}) or a plain
        secret ({secret}: a CA bundle, a CRL), as Octavia's local certificate manager reads
        them."""
        parts = {"crt": secret.get("certificate", secret.get("secret")),
                 "key": secret.get("private_key"), "int": secret.get("intermediates")}
        for suffix, text in parts.items():
            path = self.storage / f"{ref}.{suffix}"
            if text:
                path.write_text(text)
                path.chmod(0o600)
            else:
                path.unlink(missing_ok=True)

    @staticmethod
    def _delete_listener(driver, model: Model, amphora: data_models.Amphora,
                         listener_id: str) -> None:
        """driver.delete(listener) on one amphora (it walks all of the load balancer's, which
        may each need their own layout): the first amphora's call takes the listener off the
        load balancer, the next one's finds it gone, as in Octavia's pairs."""
        lb = model.lb
        listener = next((x for x in lb.listeners if x.id == listener_id), None)
        listener = model.deleted_listeners.setdefault(listener_id, listener)
        if listener is None:
            raise KeyError(f"no listener {listener_id} on load balancer {lb.id}")
        everyone = lb.amphorae
        lb.amphorae = [amphora]
        try:
            driver.delete(listener)
        finally:
            lb.amphorae = everyone

    def _dry_run(self, driver, model: Model, amphora, haproxy_version: str,
                 details: dict) -> dict:
        """update_amphora_listeners against a client that captures instead of sending."""
        capture = CapturingClient(haproxy_version, details)
        real_clients, real_version = driver.clients, getattr(amphora, "api_version", None)
        driver.clients = {"base": capture,
                          API_VERSION: MemoryCappingClient(capture, model.memory_kb)}
        try:
            driver.update_amphora_listeners(model.lb, amphora)
        finally:
            driver.clients, amphora.api_version = real_clients, real_version
        return {"config": capture.config, "files": capture.files}

    def _certificate_file(self, ref: str) -> dict:
        """The file name and md5 under which the driver stores certificate container ref."""
        holder = data_models.Listener(project_id=PROJECT_ID, tls_certificate_id=ref,
                                      sni_containers=[])
        container = cert_parser.load_certificates_data(self.driver.cert_manager,
                                                       holder)["tls_cert"]
        pem = cert_parser.build_pem(container)
        return {"name": f"{container.id}.pem",
                "md5": hashlib.md5(pem, usedforsecurity=False).hexdigest()}


def answer(probe: Probe, request: dict):
    op = request["op"]
    if op == "configure":
        return probe.configure(request["settings"])
    if op == "model":
        return probe.model(request["lb"])
    if op == "forget":
        return probe.forget(request["lb_id"])
    if op == "call":
        return probe.call(request["lb_id"], request["method"], request.get("amphora"),
                          request.get("args", {}))
    raise ValueError(f"unknown op {op}")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="octavia-probe-certs-") as storage:
        probe = Probe(Path(storage))
        for line in sys.stdin:
            try:
                reply = {"ok": True, "result": answer(probe, json.loads(line))}
            except Exception as exc:  # the caller wants the driver's failure, whatever it is
                where = traceback.extract_tb(exc.__traceback__)[-1]
                reply = {"ok": False, "error": f"{type(exc).__name__}: {exc} "
                                               f"(at {where.filename}:{where.lineno})"}
            try:
                print(json.dumps(reply, default=str), flush=True)
            except TypeError:
                print(json.dumps({"ok": True, "result": repr(reply["result"])}), flush=True)


if __name__ == "__main__":
    main()
