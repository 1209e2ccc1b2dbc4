"""Rendered haproxy.cfg and keepalived.conf: the contract's naming, the features, and acceptance
by the real haproxy (`haproxy -c`) and keepalived (`keepalived -t`) installed on this host."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.amphora_api.pki import CertificateAuthority
from harness.model.loadbalancer import (
    HostRoute,
    ListenerProtocol,
    LoadBalancer,
    ModelError,
    VipSubnet,
    VrrpAmphora,
    VrrpGroup,
    VrrpRole,
)
from harness.model.yaml_loader import LB_FIXTURES_DIR, lb_fixture, load_lb
from harness.render.amphora_configs import (
    AmphoraPaths,
    render_crt_list,
    render_haproxy,
    render_keepalived,
)
from tests.support.lb_fixtures import ADDRESSES

AMPHORA_ID = "6f1c8a52-3a57-4c7e-9a55-0d4f3f0e2b11"
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
KEEPALIVED = shutil.which("keepalived") or "/usr/sbin/keepalived"
# keepalived -t exits 6 when script_security is off (Octavia's keepalived.conf runs its check
# script that way too), whatever else it found.
KEEPALIVED_ONLY_SCRIPT_SECURITY = 6


@pytest.fixture
def paths() -> Iterator[AmphoraPaths]:
    # A short base path: the stats socket path must fit in a sockaddr_un.
    base = Path(tempfile.mkdtemp(prefix="ah-render-"))
    yield AmphoraPaths(base_path=str(base), base_cert_dir=str(base / "certs"))
    shutil.rmtree(base)


def test_a_base_path_too_long_for_the_stats_socket_is_refused():
    with pytest.raises(ModelError, match=r"AmphoraPaths\.base_path"):
        AmphoraPaths(base_path="/" + "d" * 60)


def install_certificates(lb: LoadBalancer, paths: AmphoraPaths) -> None:
    """Lay out the files the controller would upload, where the agent would store them."""
    cert_dir = Path(paths.cert_dir(lb.id))
    cert_dir.mkdir(parents=True, exist_ok=True)
    for listener in lb.listeners:
        for cert in listener.certificates:
            Path(paths.certificate(lb.id, cert.id)).write_bytes(cert.pem)
        if listener.certificates:
            Path(paths.crt_list(lb.id, listener.id)).write_text(
                render_crt_list(lb, listener, paths)
            )


def haproxy_check(config: str, directory: Path) -> subprocess.CompletedProcess:
    path = directory / "haproxy.cfg"
    path.write_text(config)
    return subprocess.run(
        [HAPROXY, "-c", "-f", str(path)], capture_output=True, text=True, timeout=30
    )


def sections(config: str) -> dict[str, list[str]]:
    """Section header -> its (stripped) lines."""
    out: dict[str, list[str]] = {}
    current = None
    for line in config.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if not line[0].isspace():
            current = line
            out[current] = []
        else:
            out[current].append(line.strip())
    return out


@pytest.mark.parametrize("path", sorted(LB_FIXTURES_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_fixture_renders_a_config_haproxy_accepts(path, pems, paths, tmp_path):
    lb = load_lb(path, addresses=ADDRESSES, certificates=pems)
    install_certificates(lb, paths)
    config = render_haproxy(lb, AMPHORA_ID, paths)
    result = haproxy_check(config, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[ALERT]" not in result.stdout + result.stderr


def test_haproxy_check_is_a_real_check(tmp_path):
    """The check above can fail: a broken config is refused."""
    lb = load_lb(lb_fixture("http"), addresses=ADDRESSES)
    config = render_haproxy(lb, AMPHORA_ID) + "    no-such-keyword 1\n"
    assert haproxy_check(config, tmp_path).returncode != 0


def test_names_follow_the_contract(pems, paths):
    lb = load_lb(lb_fixture("everything"), addresses=ADDRESSES, certificates=pems)
    config = render_haproxy(lb, AMPHORA_ID, paths)
    parts = sections(config)
    assert [s for s in parts if s.startswith("global")] == ["global"]
    assert [line for line in parts["global"] if line.startswith("stats socket")] == [
        f"stats socket {paths.base_path}/{lb.id}.sock mode 0666 level user"
    ]
    for listener in lb.listeners:
        frontend = parts[f"frontend {listener.id}"]
        assert f"mode {listener.protocol.mode}" in frontend
        assert f"default_backend {listener.default_pool_id}:{listener.id}" in frontend
        for pool in listener.pools:
            backend = parts[f"backend {pool.id}:{listener.id}"]
            servers = [line.split()[1] for line in backend if line.startswith("server ")]
            assert servers == [member.id for member in pool.members]
    frontends = [s for s in parts if s.startswith("frontend ")]
    assert len(frontends) == len(lb.listeners)


def test_terminated_https_binds_the_crt_list_with_default_certificate_first(pems, paths):
    lb = load_lb(lb_fixture("https-sni"), addresses=ADDRESSES, certificates=pems)
    https = lb.listener("https")
    frontend = sections(render_haproxy(lb, AMPHORA_ID, paths))[f"frontend {https.id}"]
    crt_list = paths.crt_list(lb.id, https.id)
    assert f"bind 198.18.1.10:443 ssl crt-list {crt_list}" in frontend
    assert crt_list == f"{paths.base_cert_dir}/{lb.id}/{https.id}.pem"
    lines = render_crt_list(lb, https, paths).splitlines()
    assert lines == [paths.certificate(lb.id, c.id) for c in https.certificates]
    assert lines[0].endswith(f"/{https.certificate.id}.pem")


def test_http_listeners_name_the_amphora_in_a_response_header_and_tcp_ones_do_not(paths):
    lb = load_lb(lb_fixture("everything"), addresses=ADDRESSES, certificates={
        "default": CertificateAuthority().issue("x").bundle,
        "site-a": CertificateAuthority().issue("y").bundle,
    })
    parts = sections(render_haproxy(lb, AMPHORA_ID, paths))
    for listener in lb.listeners:
        frontend = parts[f"frontend {listener.id}"]
        header = f"http-response set-header X-Amphora-Id {AMPHORA_ID}"
        assert (header in frontend) == (listener.protocol is not ListenerProtocol.TCP)


def test_member_options(paths):
    lb = load_lb(lb_fixture("everything"), addresses=ADDRESSES, certificates={
        "default": CertificateAuthority().issue("x").bundle,
        "site-a": CertificateAuthority().issue("y").bundle,
    })
    listener = lb.listener("http")
    pool = listener.pools[0]
    backend = sections(render_haproxy(lb, AMPHORA_ID, paths))[f"backend {pool.id}:{listener.id}"]
    servers = {line.split()[1]: line for line in backend if line.startswith("server ")}
    m1, m2, m3, disabled = pool.members
    assert servers[m1.id] == (
        f"server {m1.id} 198.18.2.11:8080 weight 10 check inter 5s fall 3 rise 3 cookie {m1.id}"
    )
    assert " weight 0 " in servers[m2.id]
    assert servers[m3.id].endswith(" backup")
    assert servers[disabled.id].endswith(" disabled")
    assert "option allbackups" in backend
    assert "cookie SRV insert indirect nocache" in backend
    assert "http-check expect rstatus 200|201|202|203|204|301" in backend
    assert "option httpchk HEAD /healthz?full=1" in backend


def test_l7_policies_render_in_execution_order_with_their_rules(paths):
    lb = load_lb(lb_fixture("l7"), addresses=ADDRESSES)
    listener = lb.listener("http")
    frontend = sections(render_haproxy(lb, AMPHORA_ID, paths))[f"frontend {listener.id}"]
    actions = [line.split()[0] for line in frontend
               if line.split()[0] in ("http-request", "redirect", "use_backend")]
    assert actions == ["http-request", "redirect", "use_backend", "use_backend"]
    pools = {pool.name: pool.id for pool in listener.pools}
    policy = next(p for p in listener.l7policies if p.name == "to-api")
    rule = policy.rules[0]
    assert f"acl {rule.id} path -m beg /api" in frontend
    assert f"use_backend {pools['api']}:{listener.id} if {rule.id}" in frontend
    assert "acl allowed-source src 198.18.0.0/15 127.0.0.0/8" in frontend
    assert "tcp-request connection reject if !allowed-source" in frontend


def test_a_policy_without_rules_is_not_rendered(pems, paths):
    lb = load_lb(lb_fixture("everything"), addresses=ADDRESSES, certificates=pems)
    config = render_haproxy(lb, AMPHORA_ID, paths)
    assert not re.search(r"deny if\s*$", config, re.MULTILINE)


def test_invalid_model_renders_nothing():
    lb = load_lb(lb_fixture("http"), addresses=ADDRESSES)
    lb.listeners[0].pools[0].members[0].address = "198.18.2.11 backup"
    with pytest.raises(ModelError, match=r"members\[0\]\.address"):
        render_haproxy(lb, AMPHORA_ID)
    with pytest.raises(ModelError, match="amphora_id"):
        render_haproxy(load_lb(lb_fixture("http"), addresses=ADDRESSES), "amp\nglobal")
    with pytest.raises(ModelError, match="at least one listener"):
        render_haproxy(LoadBalancer(vip_address="198.18.1.10"), AMPHORA_ID)


# --- keepalived -------------------------------------------------------------------------------


def pair(lb: LoadBalancer) -> tuple[VrrpAmphora, VrrpAmphora]:
    master = VrrpAmphora(amphora_id=str(uuid.uuid4()), role=VrrpRole.MASTER,
                         vrrp_ip="198.18.1.21", interface="eth1", peer_ips=["198.18.1.22"])
    backup = VrrpAmphora(amphora_id=str(uuid.uuid4()), role=VrrpRole.BACKUP,
                         vrrp_ip="198.18.1.22", interface="eth1", peer_ips=["198.18.1.21"])
    return master, backup


SUBNET = VipSubnet(cidr="198.18.1.0/24", gateway="198.18.1.1",
                   host_routes=[HostRoute(destination="10.20.0.0/16", nexthop="198.18.1.254")])


def test_keepalived_conf_has_octavias_shape(paths):
    lb = load_lb(lb_fixture("everything"), addresses=ADDRESSES, certificates={
        "default": CertificateAuthority().issue("x").bundle,
        "site-a": CertificateAuthority().issue("y").bundle,
    })
    master, backup = pair(lb)
    group = VrrpGroup(auth_pass="s3cret")
    text = render_keepalived(lb, master, SUBNET, group, paths)
    lines = [line.strip() for line in text.splitlines()]
    for expected in (
        f"script {paths.base_path}/vrrp/check_script.sh",
        f"vrrp_instance {lb.id.replace('-', '')} {{",
        "interface eth1", "priority 100", "nopreempt", "accept", "garp_master_refresh 5",
        "garp_master_refresh_repeat 2", "advert_int 1", "auth_type PASS", "auth_pass s3cret",
        "unicast_src_ip 198.18.1.21", "198.18.1.22", "198.18.1.10",
        "198.18.1.0/24 dev eth1 src 198.18.1.10 scope link table 1",
        "default via 198.18.1.1 dev eth1 onlink table 1",
        "10.20.0.0/16 dev eth1 via 198.18.1.254 onlink table 1",
        "from 198.18.1.10/32 table 1 priority 100", "check_script",
    ):
        assert expected in lines, expected
    assert "priority 90" in render_keepalived(lb, backup, SUBNET, group, paths)


def test_keepalived_needs_an_active_standby_load_balancer():
    lb = load_lb(lb_fixture("http"), addresses=ADDRESSES)
    with pytest.raises(ModelError, match="topology"):
        render_keepalived(lb, pair(lb)[0], SUBNET, VrrpGroup())


@pytest.fixture
def namespace_with_eth1():
    """keepalived -t checks that the interface exists: give it one in a namespace of our own."""
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.skip("needs root and iproute2")
    name = f"amphora-harness-test-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "add", "eth1", "type", "veth", "peer", "name",
                        "eth1-peer"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def keepalived_problems(namespace: str, text: str, directory: Path) -> list[str]:
    """What `keepalived -t` finds wrong with text, apart from script_security being off (its
    exit status alone cannot tell: 6 covers "only that" and "that and unknown keywords")."""
    path = directory / "keepalived.conf"
    path.write_text(text)
    result = subprocess.run(
        ["ip", "netns", "exec", namespace, KEEPALIVED, "-t", "-f", str(path)],
        capture_output=True, text=True, timeout=30,
    )
    problems = [
        line for line in (result.stdout + result.stderr).splitlines()
        if line.strip() and "script_security" not in line
    ]
    if result.returncode not in (0, KEEPALIVED_ONLY_SCRIPT_SECURITY):
        problems.append(f"exit status {result.returncode}")
    return problems


@pytest.mark.netns
def test_keepalived_accepts_both_configs_of_a_pair(namespace_with_eth1, paths, tmp_path):
    script = Path(paths.vrrp_check_script)
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o755)
    lb = load_lb(lb_fixture("http"), addresses=ADDRESSES)
    lb.topology = "ACTIVE_STANDBY"
    for amphora in pair(lb):
        text = render_keepalived(lb, amphora, SUBNET, VrrpGroup(), paths)
        assert keepalived_problems(namespace_with_eth1, text, tmp_path) == []
    broken = text.replace("nopreempt", "no_such_keyword")
    assert keepalived_problems(namespace_with_eth1, broken, tmp_path) != []
