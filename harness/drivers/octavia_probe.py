"""OpenStack Octavia's own amphora driver, driven by harness/octavia_driver.py.

This runs under a Python that has Octavia installed (`.venv-octavia`, made by scripts/bootstrap),
never the project's: it imports nothing of ours, so what reaches the agent is exactly what
Octavia's HaproxyAmphoraLoadBalancerDriver sends — its REST client, its TLS settings, its jinja
templates for haproxy.cfg and keepalived.conf.

Protocol: one JSON object per line on stdin, one JSON answer per line on stdout.
  {"op": "configure", "settings": {...}}       Octavia's [haproxy_amphora] options and friends
  {"op": "model", "lb": {...}}                  load balancer, listeners, members, amphorae
  {"op": "call", "method": NAME, "args": {...}} a driver method on that model ("amphora": the
                                                index of the amphora it acts on, default 0)
Answers are {"ok": true, "result": ...} or {"ok": false, "error": "Type: message"}.
"""

from __future__ import annotations

import json
import sys
import traceback
import warnings

warnings.filterwarnings("ignore")  # eventlet and oslo deprecation noise on stderr

from octavia.amphorae.drivers.haproxy import rest_api_driver  # noqa: E402
from octavia.common import constants, data_models  # noqa: E402
from octavia.network import data_models as network_models  # noqa: E402
from oslo_config import cfg  # noqa: E402

CONF = cfg.CONF
PROJECT_ID = "amphora-harness"


def configure(settings: dict) -> None:
    CONF([], project="octavia", default_config_files=[])
    for group, options in settings.items():
        for name, value in options.items():
            CONF.set_override(name, value, group=group)


def build_model(spec: dict) -> dict:
    """Octavia data models from a small JSON description (only what the driver reads)."""
    lb = data_models.LoadBalancer(
        id=spec["id"], project_id=PROJECT_ID,
        topology=spec.get("topology", constants.TOPOLOGY_SINGLE),
        vip=data_models.Vip(ip_address=spec["vip"], vnic_type=spec.get(
            "vip_vnic_type", constants.VNIC_TYPE_NORMAL)),
        amphorae=[], listeners=[], additional_vips=[], enabled=True,
        vrrp_group=data_models.VRRPGroup(
            vrrp_group_name=spec["id"].replace("-", ""), vrrp_auth_type="PASS",
            vrrp_auth_pass=spec["id"][:8], advert_int=1))
    for item in spec["amphorae"]:
        lb.amphorae.append(data_models.Amphora(
            id=item["id"], status=constants.AMPHORA_ALLOCATED, load_balancer=lb,
            lb_network_ip=item["lb_network_ip"], vrrp_ip=item.get("vrrp_ip"), ha_ip=spec["vip"],
            role=item.get("role", constants.ROLE_STANDALONE), vrrp_id=spec.get("vrrp_id", 1),
            vrrp_priority=item.get("vrrp_priority")))
    for item in spec["listeners"]:
        pool = data_models.Pool(
            id=item["pool_id"], protocol=item["protocol"], enabled=True,
            lb_algorithm=item.get("algorithm", constants.LB_ALGORITHM_ROUND_ROBIN),
            members=[], l7policies=[], listeners=[], tls_enabled=False,
            provisioning_status=constants.ACTIVE)
        for member in item["members"]:
            pool.members.append(data_models.Member(
                id=member["id"], ip_address=member["address"], protocol_port=member["port"],
                weight=member.get("weight", 1), enabled=True, backup=False, pool=pool,
                provisioning_status=constants.ACTIVE, operating_status=constants.ONLINE))
        listener = data_models.Listener(
            id=item["id"], protocol=item["protocol"], protocol_port=item["port"],
            connection_limit=item.get("connection_limit", -1), enabled=True,
            default_pool=pool, default_pool_id=pool.id, pools=[pool], l7policies=[],
            sni_containers=[], insert_headers={},
            allowed_cidrs=[data_models.ListenerCidr(listener_id=item["id"], cidr=cidr)
                           for cidr in item.get("allowed_cidrs", [])],
            load_balancer=lb, provisioning_status=constants.ACTIVE)
        pool.listeners.append(listener)
        lb.listeners.append(listener)
    subnet = spec.get("vip_subnet")
    vip_subnet = network_models.Subnet(
        id="vip-subnet", cidr=subnet["cidr"], gateway_ip=subnet["gateway_ip"],
        host_routes=[]) if subnet else None
    return {"lb": lb, "vip_subnet": vip_subnet}


def amphora_network_config(model: dict) -> dict:
    """What Octavia's flows hand the VRRP templater for each amphora."""
    subnet = model["vip_subnet"]
    return {amp.id: {constants.VIP_SUBNET: {"cidr": subnet.cidr,
                                            "gateway_ip": subnet.gateway_ip,
                                            "host_routes": []},
                     "additional_vip_data": []}
            for amp in model["lb"].amphorae}


def call(driver, model: dict, method: str, args: dict):
    lb = model["lb"]
    amphora = lb.amphorae[args.get("amphora", 0)]
    if method == "check":
        return driver.check(amphora)
    if method == "get_info":
        return driver.get_info(amphora)
    if method == "update_amphora_listeners":
        return driver.update_amphora_listeners(lb, amphora)
    if method in ("start", "reload"):
        return getattr(driver, method)(lb, amphora)
    if method == "delete_listener":
        listener = next(x for x in lb.listeners if x.id == args["listener_id"])
        return driver.delete(listener)
    if method == "upload_cert_amp":
        return driver.upload_cert_amp(amphora, args["pem"].encode())
    if method == "update_amphora_agent_config":
        return driver.update_amphora_agent_config(amphora, args["config"].encode())
    if method == "post_vip_plug":
        port = network_models.Port(
            id=f"vrrp-port-{amphora.id}", mac_address=args["mac_address"],
            network=network_models.Network(id="vip-network", mtu=args.get("mtu", 1500)),
            fixed_ips=[network_models.FixedIP(subnet_id="vip-subnet",
                                              ip_address=amphora.vrrp_ip,
                                              subnet=model["vip_subnet"])])
        return driver.post_vip_plug(amphora, lb, amphora_network_config(model), port,
                                    model["vip_subnet"], additional_vip_data=[])
    if method == "get_interface_from_ip":
        return driver.get_interface_from_ip(amphora, args["ip"])
    if method == "post_network_plug":
        subnet = network_models.Subnet(id="member-subnet", cidr=args["cidr"],
                                       gateway_ip=args.get("gateway"), host_routes=[])
        port = network_models.Port(
            id=f"member-port-{args['mac_address']}", mac_address=args["mac_address"],
            network=network_models.Network(id="member-network", mtu=args.get("mtu", 1500)),
            fixed_ips=[network_models.FixedIP(subnet_id=subnet.id,
                                              ip_address=args["ip_address"], subnet=subnet)])
        return driver.post_network_plug(amphora, port, amphora_network_config(model))
    if method == "update_vrrp_interface":
        # Octavia's flow asks the amphora which interface carries its VRRP address.
        amphora.vrrp_interface = driver.get_interface_from_ip(amphora, amphora.vrrp_ip)
        return amphora.vrrp_interface
    if method == "update_vrrp_conf":
        return driver.update_vrrp_conf(lb, amphora_network_config(model), amphora)
    if method == "start_vrrp_service":
        return driver.start_vrrp_service(amphora)
    if method == "set_interface_rules":
        return driver.set_interface_rules(amphora, amphora.vrrp_ip, args["rules"])
    if method == "client":
        # A REST client call the driver makes inside its flows, by name (e.g. get_details).
        client = driver.clients[amphora.api_version or "1.0"]
        return getattr(client, args["name"])(amphora, *args.get("args", []))
    raise ValueError(f"unknown method {method}")


def main() -> None:
    driver = None
    model: dict = {}
    for line in sys.stdin:
        request = json.loads(line)
        try:
            if request["op"] == "configure":
                configure(request["settings"])
                driver = rest_api_driver.HaproxyAmphoraLoadBalancerDriver()
                answer = None
            elif request["op"] == "model":
                model = build_model(request["lb"])
                answer = None
            else:
                answer = call(driver, model, request["method"], request.get("args", {}))
            reply = {"ok": True, "result": answer}
        except Exception as exc:  # the test wants the driver's failure, whatever it is
            where = traceback.extract_tb(exc.__traceback__)[-1]
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc} "
                                           f"(at {where.filename}:{where.lineno})"}
        try:
            print(json.dumps(reply, default=str), flush=True)
        except TypeError:
            print(json.dumps({"ok": True, "result": repr(answer)}), flush=True)


if __name__ == "__main__":
    main()
