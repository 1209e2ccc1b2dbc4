"""What the lab does differently when its amphorae run OpenStack Octavia's own agent (the image
of harness.lab.octavia_image) instead of ours: systemd boots it, it starts slowly, it needs two
options ours does not, its plugging needs small interface indexes, and haproxy's file limit may
have to be lowered visibly on a host that cannot grant Octavia's.
"""

from __future__ import annotations

AGENTS = ("ours", "octavia")
OCTAVIA = "octavia"

# systemd reaches multi-user in ~5 s; the agent's Python start takes 9-15 s idle and 35-55 s on a
# loaded 2-core host (measured); readiness gets room for that.
OCTAVIA_READY_TIMEOUT_S = 180.0

# Options of Octavia's [amphora_agent] its controller writes and its agent reads (ours has
# neither): where interface files go, and the data-plane UDP driver.
OCTAVIA_CONFIG_EXTRA = {"amphora_agent": {
    "agent_server_network_dir": "/etc/octavia/interfaces/",
    "amphora_udp_driver": "keepalived_lvs",
}}

# The image's helper (images/octavia-amphora/rootfs/usr/local/sbin/amphora-harness-reindex): a
# hot-plugged port gets a small interface index, as a VM's NIC has. Octavia's amphora-interface
# passes the index where pyroute2 expects the address family (InterfaceController._wait_tentative,
# octavia/amphorae/backends/utils/interface.py), which fails for indexes over 255 and a Docker
# veth has the host's counter.
REINDEX_ARGV = ("/usr/local/sbin/amphora-harness-reindex",)

# Whether an amphora's boot is over: Octavia's agent answers while systemd is still starting
# amphora-netns and the haproxy-<lb> units it enabled, so an amphora started again serves only
# once the boot's jobs are done ("degraded": done, with a unit failed).
BOOT_STATE_ARGV = ("systemctl", "is-system-running")
BOOT_DONE_STATES = ("running", "degraded")

# Octavia's haproxy unit (LimitNOFILE in its haproxy systemd template).
OCTAVIA_HAPROXY_NOFILE = 2600000
HAPROXY_DROPIN_PATH = "/etc/systemd/system/haproxy-.service.d/50-amphora-harness-nofile.conf"
HAPROXY_LIMITS_PATH = "/etc/octavia/amphora-harness-haproxy-limits.cfg"


def haproxy_limit_files(hard_nofile: int) -> dict[str, bytes]:
    """Files that let Octavia's haproxy units start under a hard open-files limit below
    Octavia's (none when the limit is high enough): a prefix drop-in for every
    haproxy-<lb>.service that states the real limit, and one more `-f` file with
    `no strict-limits` (through $USERCONFIG, which the unit expands unbraced, i.e. as words).
    Without them haproxy exits ("Cannot raise FD limit to 125029, limit is 20000" for Octavia's
    maxconn 50000) and systemd restarts it forever. Octavia's config, unit and user-group file
    stay as they are."""
    if hard_nofile >= OCTAVIA_HAPROXY_NOFILE:
        return {}
    dropin = (
        f"# amphora-harness: this host's hard open-files limit is {hard_nofile}, below "
        f"Octavia's LimitNOFILE={OCTAVIA_HAPROXY_NOFILE}:\n"
        "# haproxy runs with that limit and `no strict-limits` (it warns instead of exiting);\n"
        "# connections beyond about half the limit fail.\n"
        "[Service]\n"
        f"LimitNOFILE={hard_nofile}\n"
        'Environment="USERCONFIG=/var/lib/octavia/haproxy-default-user-group.conf '
        f'-f {HAPROXY_LIMITS_PATH}"\n')
    limits = (f"# amphora-harness: hard open-files limit {hard_nofile}, below what maxconn "
              "needs: start anyway\nglobal\n    no strict-limits\n")
    return {HAPROXY_DROPIN_PATH: dropin.encode(), HAPROXY_LIMITS_PATH: limits.encode()}


def haproxy_limit_warning(hard_nofile: int) -> str:
    return (f"this host's hard open-files limit for amphorae is {hard_nofile}, below Octavia's "
            f"LimitNOFILE={OCTAVIA_HAPROXY_NOFILE}: Octavia's haproxy units run with "
            f"LimitNOFILE={hard_nofile} and `no strict-limits` ({HAPROXY_DROPIN_PATH})")
