"""The lab's fixed facts, in one place: what the amphora's parts are called and where its agent
listens, where the member image keeps what, and the timers of the failover pair that the suites
and the bench both build.

Everything that must agree between the harness, its suites and the bench reads it from here.
"""

from __future__ import annotations

from harness.model.loadbalancer import VrrpGroup

# Octavia's name for the namespace that holds the VIP, haproxy and keepalived in an amphora.
DATA_PLANE_NAMESPACE = "amphora-haproxy"

# The agent's port on the management network, and its files at Octavia's paths (so Octavia's
# own agent image finds them too).
AGENT_PORT = 9443
AGENT_CONFIG_PATH = "/etc/octavia/amphora-agent.conf"
AGENT_CA_PATH = "/etc/octavia/certs/client_ca.pem"
AGENT_SERVER_PEM_PATH = "/etc/octavia/certs/server.pem"

# The member image's services (harness.lab.member_server) and its TLS certificate.
MEMBER_PORTS = {"http": 8080, "https": 8443, "tcp": 9000, "udp": 9000}
MEMBER_TLS_PATH = "/etc/member/tls.pem"

# The MTU of the lab's networks, as a cloud reports it for a port.
DATA_PLANE_MTU = 1500

# The failover pair's VRRP timers, Octavia's defaults ([keepalived_vrrp]): adverts every second,
# and a haproxy that fails two checks 5 s apart drops the holder's priority. Master_Down_Interval
# is then 3 s plus skew (3.65 s at the backup's priority), which bounds a hard-kill outage. The
# check interval stays Octavia's: a killed haproxy is started again by the amphora (systemd's
# Restart=always on Octavia's, the agent on ours), measured at 0.3-1 s idle and up to 2.9 s on a
# loaded 2-core host, and a shorter interval would let that restart cost the VIP.
FAILOVER_VRRP = VrrpGroup(advert_int=1, check_interval=5, check_fall=2, check_rise=2)
