"""The driver side of the Amphora API 1.0: what a load-balancer controller sends an amphora.

Trust works as in Octavia: the driver presents its client certificate, accepts only server
certificates from the lab CA, and checks that the server certificate's subject CN is the amphora
id it means to talk to. Amphorae are addressed by IP, so there is no host name to check; the
check runs right after the handshake, before any request byte is sent.

Connection errors and the agent's "not ready" answers (503; a 404 that is not the agent's JSON,
or that says the plugged interface has not shown up yet) are retried, bounded in count and time.
"""

from __future__ import annotations

import functools
import ipaddress
import ssl
from typing import Any, NamedTuple

import requests
import tenacity
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPSConnection
from urllib3.connectionpool import HTTPSConnectionPool

from harness.amphora_api.pki import DriverCredentials
from harness.polling import scaled

USER_AGENT = "amphora-harness client/1.0"
NOT_READY_DETAIL = "No suitable network interface found"


class AmphoraAPIError(Exception):
    """The agent answered with an error status."""

    def __init__(self, status: int, message: str, details: Any = None) -> None:
        super().__init__(f"{status} {message}" + (f": {details}" if details else ""))
        self.status = status
        self.message = message
        self.details = details


class AmphoraNotReady(Exception):
    """An answer that means "try again later"; retried, then reported as AmphoraAPIError."""

    def __init__(self, response: requests.Response) -> None:
        super().__init__(f"amphora not ready: {response.status_code}")
        self.response = response


class Document(NamedTuple):
    """A file the agent returns as is, with its ETag (md5)."""

    body: str
    etag: str


def common_names(peer_cert: dict) -> list[str]:
    """The subject CNs of a certificate as ssl.SSLSocket.getpeercert() returns it."""
    return [value for rdn in peer_cert.get("subject", ()) for key, value in rdn
            if key == "commonName"]


class _AmphoraIdCheckingConnection(HTTPSConnection):
    """An HTTPS connection that accepts a verified server only if its CN is the amphora id."""

    amphora_id = ""

    def connect(self) -> None:
        super().connect()
        names = common_names(self.sock.getpeercert() or {})
        if names != [self.amphora_id]:
            self.close()
            raise ssl.SSLCertVerificationError(
                f"server certificate CN {names} is not the amphora id {self.amphora_id}"
            )


class _AmphoraAdapter(HTTPAdapter):
    """Mutual TLS to one amphora: our client certificate, the lab CA, the CN check."""

    def __init__(self, amphora_id: str, tls: ssl.SSLContext) -> None:
        self._amphora_id = amphora_id
        self._tls = tls
        super().__init__(max_retries=0)  # retries are ours (tenacity), not urllib3's

    def cert_verify(self, conn, url, verify, cert) -> None:
        # Trust is our context's alone (the lab CA, loaded once). requests would hand urllib3 a
        # CA file here, which it loads into that shared context on every new connection: slow
        # and, with verify=True, it would add the public CA bundle to what we trust.
        conn.cert_reqs = "CERT_REQUIRED"
        conn.ca_certs = None
        conn.ca_cert_dir = None

    def init_poolmanager(self, connections, maxsize, block=False, **pool_kwargs) -> None:
        # assert_hostname=False: urllib3 must not match the address against the certificate;
        # the amphora id check replaces it.
        pool_kwargs.update(ssl_context=self._tls, assert_hostname=False)
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        connection_cls = type("AmphoraConnection", (_AmphoraIdCheckingConnection,),
                              {"amphora_id": self._amphora_id})
        pool_cls = type("AmphoraConnectionPool", (HTTPSConnectionPool,),
                        {"ConnectionCls": connection_cls})
        self.poolmanager.pool_classes_by_scheme = {
            **self.poolmanager.pool_classes_by_scheme, "https": pool_cls,
        }


def _client_tls_context(credentials: DriverCredentials) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(credentials.ca))
    context.check_hostname = False  # see _AmphoraIdCheckingConnection
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(str(credentials.client_pem))
    return context


def _not_ready(response: requests.Response) -> bool:
    if response.status_code == 503:
        return True
    if response.status_code != 404:
        return False
    if "application/json" not in response.headers.get("Content-Type", ""):
        return True  # something answered, but not the agent's API yet
    try:
        details = response.json().get("details") or ""
    except (ValueError, AttributeError):
        return False
    return NOT_READY_DETAIL in str(details)


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, AmphoraNotReady):
        return True
    # An SSLError (wrong CA, wrong CN) is a ConnectionError too, but retrying cannot fix it.
    # A read timeout is not retried: the agent may have acted on the request.
    return isinstance(exc, requests.ConnectionError) and not isinstance(
        exc, requests.exceptions.SSLError)


def api_error(response: requests.Response) -> AmphoraAPIError:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "message" in body:
        return AmphoraAPIError(response.status_code, body["message"], body.get("details"))
    return AmphoraAPIError(response.status_code, response.reason or "error", response.text)


class AmphoraClient:
    """One method per endpoint of the Amphora API 1.0."""

    def __init__(
        self,
        address: str,
        port: int,
        amphora_id: str,
        credentials: DriverCredentials,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 120.0,
        retries: int = 30,
        retry_interval: float = 1.0,
        retry_deadline: float = 120.0,
    ) -> None:
        host = f"[{address}]" if ipaddress.ip_address(address).version == 6 else address
        self.amphora_id = amphora_id
        self.base_url = f"https://{host}:{port}"
        self._timeout = (connect_timeout, read_timeout)
        self._session = requests.Session()
        # No proxies, CA bundles or netrc from the environment: the lab is reached directly and
        # trusted through its own CA only (see _AmphoraAdapter.cert_verify).
        self._session.trust_env = False
        self._session.headers["User-Agent"] = USER_AGENT
        self._session.mount("https://", _AmphoraAdapter(amphora_id, _client_tls_context(
            credentials)))
        self._retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(_transient),
            stop=tenacity.stop_after_attempt(retries)
            | tenacity.stop_after_delay(scaled(retry_deadline)),
            wait=tenacity.wait_fixed(retry_interval),
            reraise=True,
        )

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> AmphoraClient:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    # --- transport --------------------------------------------------------------------------

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        """Send a request (retrying transient failures); raise AmphoraAPIError on >= 400."""

        def attempt() -> requests.Response:
            response = self._session.request(
                method, self.base_url + path, timeout=self._timeout, **kwargs)
            if _not_ready(response):
                raise AmphoraNotReady(response)
            return response

        try:
            response = self._retrying(attempt)
        except AmphoraNotReady as exc:
            response = exc.response
        if response.status_code >= 400:
            raise api_error(response)
        return response

    def _json(self, method: str, path: str, **kwargs) -> Any:
        return self.request(method, path, **kwargs).json()

    # --- discovery and status ---------------------------------------------------------------

    def version(self) -> dict:
        return self._json("GET", "/")

    def get_info(self, *, prefixed: bool = True) -> dict:
        return self._json("GET", "/1.0/info" if prefixed else "/info")

    def get_details(self) -> dict:
        return self._json("GET", "/1.0/details")

    def get_listeners(self) -> list[dict]:
        return self._json("GET", "/1.0/listeners")

    # --- haproxy configuration and lifecycle ------------------------------------------------

    def upload_config(self, lb_id: str, config: str | bytes) -> str:
        """Upload a load balancer's haproxy.cfg; returns the ETag (md5 of what was sent)."""
        data = config.encode() if isinstance(config, str) else config
        response = self.request(
            "PUT", f"/1.0/loadbalancer/{self.amphora_id}/{lb_id}/haproxy", data=data)
        return response.headers["ETag"]

    def get_config(self, lb_id: str) -> Document:
        response = self.request("GET", f"/1.0/loadbalancer/{lb_id}/haproxy")
        return Document(response.text, response.headers["ETag"])

    def lb_action(self, lb_id: str, action: str) -> dict:
        """start, stop or reload a load balancer's haproxy."""
        return self._json("PUT", f"/1.0/loadbalancer/{lb_id}/{action}")

    start = functools.partialmethod(lb_action, action="start")
    stop = functools.partialmethod(lb_action, action="stop")
    reload = functools.partialmethod(lb_action, action="reload")

    def delete_lb(self, lb_id: str) -> dict:
        return self._json("DELETE", f"/1.0/listeners/{lb_id}")

    # --- certificates -----------------------------------------------------------------------

    def upload_cert(self, lb_id: str, filename: str, pem: bytes) -> str:
        """Store a PEM file for a load balancer; returns the ETag (md5)."""
        response = self.request(
            "PUT", f"/1.0/loadbalancer/{lb_id}/certificates/{filename}", data=pem)
        return response.headers["ETag"]

    def get_cert_md5(self, lb_id: str, filename: str) -> str:
        return self._json("GET", f"/1.0/loadbalancer/{lb_id}/certificates/{filename}")["md5sum"]

    def delete_cert(self, lb_id: str, filename: str) -> dict:
        return self._json("DELETE", f"/1.0/loadbalancer/{lb_id}/certificates/{filename}")

    def rotate_server_cert(self, pem: bytes) -> dict:
        """Replace the agent's own server certificate (key + certificate + chain)."""
        return self._json("PUT", "/1.0/certificate", data=pem)

    # --- data plane -------------------------------------------------------------------------

    def plug_vip(self, vip: str, net_info: dict) -> dict:
        """net_info: subnet_cidr, gateway, mac_address (+ mtu, vrrp_ip, host_routes,
        additional_vips, is_sriov)."""
        return self._json("POST", f"/1.0/plug/vip/{vip}", json=net_info)

    def plug_network(self, port_info: dict) -> dict:
        """port_info: mac_address (+ fixed_ips, mtu, is_sriov)."""
        return self._json("POST", "/1.0/plug/network", json=port_info)

    def get_interface(self, ip_address: str) -> str:
        """The name of the data-plane interface that holds ip_address."""
        return self._json("GET", f"/1.0/interface/{ip_address}")["interface"]

    def set_interface_rules(self, ip_address: str, rules: list[dict]) -> dict:
        """Replace the VIP firewall of an SR-IOV port: rules are {protocol, cidr, port}."""
        return self._json("PUT", f"/1.0/interface/{ip_address}/rules", json=rules)

    def upload_vrrp_config(self, config: str | bytes) -> dict:
        return self._json("PUT", "/1.0/vrrp/upload", data=config)

    def vrrp_action(self, action: str) -> dict:
        """start, stop or reload keepalived."""
        return self._json("PUT", f"/1.0/vrrp/{action}")

    def update_agent_config(self, config: str | bytes) -> dict:
        """Replace the agent's INI file (heartbeat options take effect at once)."""
        return self._json("PUT", "/1.0/config", data=config)
