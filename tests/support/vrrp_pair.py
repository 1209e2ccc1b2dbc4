"""An active/standby pair on a test-made VIP network (198.19.210.0/24): its address plan and the
keepalived.conf each amphora gets, in the shape Octavia's driver renders (its values, our text).
Shared by the agent's VRRP and reboot tests, our controller's pair test and Octavia's driver's.
"""

from __future__ import annotations

from pathlib import Path

SUBNET = "198.19.210.0/24"
GATEWAY = "198.19.210.1"
VIP = "198.19.210.10"
VRRP_IPS = ("198.19.210.11", "198.19.210.12")
MEMBER = "198.19.210.50"
MEMBER_PORT = 8080
CLIENT = "198.19.210.60/24"
VRRP_ID = 61


def keepalived_config(base_path: Path, own_ip: str, peer_ip: str, priority: int) -> str:
    """keepalived.conf for the amphora at own_ip whose agent keeps its files under base_path."""
    return f"""vrrp_script check_script {{
    script {base_path}/vrrp/check_script.sh
    interval 1
    fall 2
    rise 2
}}

vrrp_instance {VRRP_ID}_pair {{
    interface eth1
    virtual_router_id {VRRP_ID}
    priority {priority}
    nopreempt
    accept
    garp_master_refresh 5
    garp_master_refresh_repeat 2
    advert_int 1
    authentication {{
        auth_type PASS
        auth_pass pairpass
    }}

    unicast_src_ip {own_ip}
    unicast_peer {{
        {peer_ip}
    }}

    virtual_ipaddress {{
        {VIP}
    }}

    virtual_ipaddress_excluded {{
    }}

    virtual_routes {{
        {SUBNET} dev eth1 src {VIP} scope link table 1
        default via {GATEWAY} dev eth1 onlink table 1
    }}

    virtual_rules {{
        from {VIP}/32 table 1 priority 100
    }}

    track_script {{
        check_script
    }}
}}
"""
