"""The lab's fixed facts, in one place: what the amphora's parts are called, and the timers of
the failover pair that the suites and the bench both build.

Everything that must agree between the harness, its suites and the bench reads it from here.
"""

from __future__ import annotations

from harness.model.loadbalancer import VrrpGroup

# Octavia's name for the namespace that holds the VIP, haproxy and keepalived in an amphora.
DATA_PLANE_NAMESPACE = "amphora-haproxy"

# The failover pair's VRRP timers: adverts every second, and a haproxy that fails two checks
# 2 s apart drops the holder's priority. Master_Down_Interval is then 3 s plus skew (3.65 s at
# the backup's priority), which bounds a hard-kill outage.
FAILOVER_VRRP = VrrpGroup(advert_int=1, check_interval=2, check_fall=2, check_rise=2)
