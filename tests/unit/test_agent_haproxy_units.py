"""Pieces of the agent's haproxy handling without a process: systemd's start limit as the
restarter applies it (and its interval option), the addresses of `bind` lines the agent
announces, and which configs leave haproxy's HTTP client unreachable."""

from __future__ import annotations

import time

import pytest

from amphora_agent.config import ConfigError, parse_config
from amphora_agent.haproxy import (
    START_LIMIT_BURST,
    START_LIMIT_INTERVAL_S,
    HaproxySupervisor,
    StartLimit,
)
from amphora_agent.haproxy_config import httpclient_unreachable, parse_haproxy_config

AGENT_SECTION = """[amphora_agent]
amphora_id = 11111111-1111-1111-1111-111111111111
agent_server_ca = /etc/octavia/certs/client_ca.pem
agent_server_cert = /etc/octavia/certs/server.pem
"""


def test_systemd_defaults():
    assert (START_LIMIT_BURST, START_LIMIT_INTERVAL_S) == (5, 10.0)
    config = parse_config(AGENT_SECTION)
    assert config.haproxy_start_limit_interval == 10.0
    limit = HaproxySupervisor(config).start_limit
    assert (limit.burst, limit.interval) == (5, 10.0)


def test_the_start_limit_interval_is_an_option_of_ours():
    config = parse_config(AGENT_SECTION + "haproxy_start_limit_interval = 3600\n")
    assert HaproxySupervisor(config).start_limit.interval == 3600.0
    for bad in ("0", "0.5", "86401", "nan", "ten"):
        with pytest.raises(ConfigError, match="haproxy_start_limit_interval"):
            parse_config(AGENT_SECTION + f"haproxy_start_limit_interval = {bad}\n")


def test_five_starts_within_the_interval_stop_automatic_restarts_for_good():
    limit = StartLimit(burst=5, interval=0.5)
    for _ in range(4):
        limit.record_start("lb")
        assert limit.allow_restart("lb")
    limit.record_start("lb")
    assert not limit.allow_restart("lb")
    assert limit.failed("lb")
    time.sleep(0.6)  # the window passed: still failed, as a systemd unit stays failed
    assert not limit.allow_restart("lb")
    limit.reset("lb")  # a start, stop or delete through the API
    assert not limit.failed("lb") and limit.allow_restart("lb")
    assert limit.allow_restart("other")


def test_starts_spread_over_more_than_the_interval_are_allowed():
    limit = StartLimit(burst=3, interval=0.2)
    for _ in range(6):
        limit.record_start("lb")
        assert limit.allow_restart("lb")
        time.sleep(0.11)


def test_bind_addresses_of_every_form_once_in_order():
    config = parse_haproxy_config(
        "frontend 11111111-1111-1111-1111-111111111111\n"
        "    bind 10.0.0.5:80,[2001:db8::5]:81\n"
        "    bind 2001:db8::6:443 ssl crt /var/lib/octavia/certs/x.pem\n"
        "    bind ipv4@10.0.0.7:1\n"
        "    bind *:80\n"
        "    bind 0.0.0.0:81\n"
        "    bind unix@/run/x.sock\n"
        "listen stats\n"
        "    bind 10.0.0.5:8080\n")
    assert config.bind_addresses == ("10.0.0.5", "2001:db8::5", "2001:db8::6", "10.0.0.7")


OCTAVIA_LIKE_GLOBAL = """# Configuration for loadbalancer 6f1b
global
    daemon
    user nobody
    log /run/rsyslog/octavia/log local0
    maxconn 50000
    stats socket /var/lib/octavia/6f1b.sock mode 0666 level user
    server-state-file /var/lib/octavia/6f1b/servers-state

frontend 2a7c
    bind 10.0.0.5:80
    http-request deny if { path_beg /admin }
    default_backend b:2a7c
"""


def test_a_config_without_lua_httpclient_settings_or_admin_socket_cannot_reach_the_client():
    assert httpclient_unreachable(OCTAVIA_LIKE_GLOBAL)
    assert httpclient_unreachable("global\n    stats socket /s.sock level operator\n")


def test_anything_that_may_use_the_client_keeps_it_as_haproxy_sets_it_up():
    for line in ("    lua-load /etc/haproxy/x.lua",
                 "    lua-load-per-thread /x.lua",
                 "    lua-prepend-path /usr/share/lua/?.lua",
                 '    "lua-load" /x.lua',
                 "    httpclient.ssl.ca-file /etc/ssl/ca.pem",
                 "    httpclient.resolvers.prefer ipv4",
                 "    stats socket /s.sock mode 600 level admin",
                 "    stats socket /s.sock level 'admin'",
                 "#   lua-load /commented/out.lua"):
        assert not httpclient_unreachable(OCTAVIA_LIKE_GLOBAL + line + "\n"), line
