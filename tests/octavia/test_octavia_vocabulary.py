"""What Octavia's driver renders beyond our model, written in the probe's vocabulary
(harness.drivers.octavia_probe) and pushed by Octavia's driver to our agent, where haproxy must
accept and run it: HTTPS pass-through with an HTTPS monitor, PROXY (with a TLS-HELLO monitor)
and PROXYV2 pools,
PROMETHEUS, client authentication with CA and CRL, ALPN, TLS versions and ciphers, HSTS,
inserted client-certificate headers, SSL rules, a redirect prefix, TLS to members (client
certificate, CA, CRL), member monitor address and port, an additional VIP, and a listener
without a connection limit (as lowered where this host needs it)."""

from __future__ import annotations

import resource
import uuid
import warnings

import pytest

from harness.drivers.octavia_driver import (
    OCTAVIA_DEFAULT_CONNECTION_LIMIT,
    OctaviaLimitWarning,
    amphora_limits,
)
from harness.drivers.octavia_model import AmphoraAccess, AmphoraSpec


def neighbour(address: str) -> str:
    """Another loopback address next to address."""
    head, last = address.rsplit(".", 1)
    return f"{head}.{int(last) % 254 + 1}"


@pytest.fixture
def agent(agent_factory):
    return agent_factory(topology="SINGLE")


def test_what_our_model_lacks_is_rendered_by_octavia_and_runs(
        start_octavia_probe, agent, pki, tenant_ca, http_backend, free_port, vip_address):
    open_files = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    with warnings.catch_warnings(record=True) as announced:
        warnings.simplefilter("always")
        limits = amphora_limits(open_files, agent.client.get_details())
    amphora = AmphoraSpec(id=agent.amphora_id, lb_network_ip=agent.host, access=AmphoraAccess(
        api_port=agent.port, paths=agent.amphora_paths(), client_cert=str(pki.driver.client_pem),
        server_ca=str(pki.driver.ca), default_connection_limit=limits.default_connection_limit,
        memory_kb=limits.memory_kb))
    server = tenant_ca.issue("tls.example.com")
    pool_client = tenant_ca.issue("pool-client", client=True)
    secrets = {
        "server": {"certificate": server.cert_pem.decode(),
                   "private_key": server.key_pem.decode()},
        "pool-client": {"certificate": pool_client.cert_pem.decode(),
                        "private_key": pool_client.key_pem.decode()},
        "client-ca": {"secret": tenant_ca.cert_pem.decode()},
        "client-crl": {"secret": tenant_ca.crl_pem().decode()},
    }
    additional_vip = neighbour(vip_address)
    ports = [free_port() for _ in range(5)]

    def member(**extra) -> dict:
        return {"id": str(uuid.uuid4()), "address": "127.0.0.1",
                "protocol_port": http_backend.port, **extra}

    def monitor(kind: str, **extra) -> dict:
        return {"id": str(uuid.uuid4()), "type": kind, "delay": 5, "timeout": 5,
                "max_retries": 3, "max_retries_down": 3, **extra}

    pools = {
        "https": {"id": str(uuid.uuid4()), "protocol": "HTTPS", "members": [member()],
                  "health_monitor": monitor("HTTPS", http_method="GET", url_path="/",
                                            expected_codes="200", http_version=1.1,
                                            domain_name="tls.example.com")},
        "proxy": {"id": str(uuid.uuid4()), "protocol": "PROXY", "members": [member()],
                  "health_monitor": monitor("TLS-HELLO")},
        "proxyv2": {"id": str(uuid.uuid4()), "protocol": "PROXYV2", "members": [member()]},
        "tls": {"id": str(uuid.uuid4()), "protocol": "HTTP", "tls_enabled": True,
                "tls_certificate_id": "pool-client", "ca_tls_certificate_id": "client-ca",
                "crl_container_id": "client-crl", "tls_versions": ["TLSv1.2", "TLSv1.3"],
                "tls_ciphers": "ECDHE-ECDSA-AES256-GCM-SHA384", "alpn_protocols": ["http/1.1"],
                "health_monitor": monitor("TCP"),
                "members": [member(monitor_address="127.0.0.1",
                                   monitor_port=http_backend.port)]},
    }

    def listener(protocol: str, port: int, pool: str | None, **extra) -> dict:
        return {"id": str(uuid.uuid4()), "protocol": protocol, "protocol_port": port,
                "default_pool_id": pools[pool]["id"] if pool else None,
                "pool_ids": [pools[pool]["id"]] if pool else [], **extra}

    def rule(kind: str, compare: str, key: str | None, value: str) -> dict:
        return {"id": str(uuid.uuid4()), "type": kind, "compare_type": compare, "key": key,
                "value": value}

    unlimited = listener("HTTPS", ports[0], "https")  # no connection_limit: Octavia's default
    listeners = [
        unlimited,
        listener("TCP", ports[1], "proxy", connection_limit=100),
        listener("TERMINATED_HTTPS", ports[2], "proxyv2", connection_limit=100,
                 tls_certificate_id="server", client_ca_tls_certificate_id="client-ca",
                 client_authentication="MANDATORY", client_crl_container_id="client-crl",
                 alpn_protocols=["h2", "http/1.1"], tls_versions=["TLSv1.2", "TLSv1.3"],
                 tls_ciphers="ECDHE-ECDSA-AES256-GCM-SHA384", hsts_max_age=3600,
                 hsts_include_subdomains=True, hsts_preload=True,
                 insert_headers={"X-SSL-Client-Verify": "true", "X-SSL-Client-DN": "true",
                                 "X-SSL-Client-CN": "true", "X-SSL-Client-SHA1": "true"},
                 l7policies=[{"id": str(uuid.uuid4()), "action": "REDIRECT_PREFIX",
                              "position": 1, "redirect_prefix": "https://elsewhere.example.com",
                              "redirect_http_code": 308,
                              "rules": [rule("SSL_CONN_HAS_CERT", "EQUAL_TO", None, "True"),
                                        rule("SSL_VERIFY_RESULT", "EQUAL_TO", None, "0"),
                                        rule("SSL_DN_FIELD", "STARTS_WITH", "CN", "pool")]}]),
        listener("HTTP", ports[3], "tls", connection_limit=100),
        listener("PROMETHEUS", ports[4], None, connection_limit=100),
    ]
    lb_id = str(uuid.uuid4())
    probe = start_octavia_probe()
    probe.model({"id": lb_id, "topology": "SINGLE", "vip": {"ip_address": vip_address},
                 "additional_vips": [{"ip_address": additional_vip,
                                      "subnet": {"id": "extra", "cidr": "127.0.0.0/8"}}],
                 "amphorae": [amphora.to_json()], "pools": list(pools.values()),
                 "listeners": listeners, "secrets": secrets})
    try:
        probe.call(lb_id, "update_amphora_listeners", agent.amphora_id)

        assert {x["uuid"]: x["status"] for x in agent.client.get_listeners()} == {
            item["id"]: "ACTIVE" for item in listeners}
        config = agent.client.get_config(lb_id).body
        for line in (f"bind {vip_address}:{ports[0]}", f"bind {additional_vip}:{ports[0]}",
                     "mode tcp", "check-ssl verify none", "HTTP/1.1",
                     "http-check send hdr Host tls.example.com", " send-proxy",
                     "send-proxy-v2-ssl-cn", "verify required", "crl-file",
                     "alpn h2,http/1.1", "no-sslv3 no-tlsv10 no-tlsv11", "ciphers ECDHE",
                     'Strict-Transport-Security "max-age=3600; includeSubDomains; preload;"',
                     "X-SSL-Client-Verify %[ssl_c_verify]", "ssl_c_used", "ssl_c_verify eq 0",
                     "ssl_c_s_dn(CN) -m beg pool", "redirect code 308 prefix", " ssl crt ",
                     "addr 127.0.0.1 port", "http-request use-service prometheus-exporter"):
            assert line in config, line
        frontend = config.split(f"frontend {unlimited['id']}\n", 1)[1]
        maxconn = limits.default_connection_limit or OCTAVIA_DEFAULT_CONNECTION_LIMIT
        assert frontend.splitlines()[0].strip() == f"maxconn {maxconn}"
        if limits.default_connection_limit is not None:  # lowered here, and said so
            assert any(issubclass(w.category, OctaviaLimitWarning)
                       and f"at most {open_files} files" in str(w.message) for w in announced)
    finally:
        for item in listeners:
            probe.call(lb_id, "delete_listener", agent.amphora_id, listener_id=item["id"])
        probe.forget(lb_id)
    assert agent.client.get_listeners() == []
