"""The address plan of one amphora on a test-made VIP network (198.19.200.0/24) with a member
network beside it (198.19.201.0/24), shared by the plug, reboot and VIP firewall tests, and the
body of a VIP plug on it."""

from __future__ import annotations

SUBNET = "198.19.200.0/24"
GATEWAY = "198.19.200.1"
VIP = "198.19.200.10"
VRRP_IP = "198.19.200.11"
CLIENT = "198.19.200.50/24"
MEMBER_SUBNET = "198.19.201.0/24"
MEMBER_IP = "198.19.201.11"


def net_info(mac: str, **overrides) -> dict:
    """The body of POST /1.0/plug/vip/VIP for the port with mac, as Octavia's driver sends it;
    overrides replace or add fields."""
    return {"subnet_cidr": SUBNET, "gateway": GATEWAY, "mac_address": mac, "mtu": 1450,
            "vrrp_ip": VRRP_IP,
            "host_routes": [{"destination": "203.0.113.0/24", "nexthop": "198.19.200.254"}],
            **overrides}
