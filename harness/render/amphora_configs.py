"""Render the model into the files an amphora runs: haproxy.cfg, crt-list files, keepalived.conf.

The model is validated again right before rendering (its objects are mutable), so every value
reaching a template has passed its grammar. Templates render with StrictUndefined: a typo in a
template fails loudly instead of printing an empty string into a config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

import jinja2

from harness.model import grammar as g
from harness.model.loadbalancer import (
    CompareType,
    L7Action,
    L7Policy,
    L7Rule,
    L7RuleType,
    Listener,
    LoadBalancer,
    Model,
    ModelError,
    MonitorType,
    Topology,
    VipSubnet,
    VrrpAmphora,
    VrrpGroup,
)

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("harness.render", "templates"),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
    autoescape=False,  # configs, not HTML: safety comes from the grammars, not from escaping
)

_BALANCE = {"ROUND_ROBIN": "roundrobin", "LEAST_CONNECTIONS": "leastconn", "SOURCE_IP": "source"}
_MATCH_FLAG = {
    CompareType.EQUAL_TO: "-m str",
    CompareType.STARTS_WITH: "-m beg",
    CompareType.ENDS_WITH: "-m end",
    CompareType.CONTAINS: "-m sub",
    CompareType.REGEX: "-m reg",
}
# haproxy runs these rule kinds in this order whatever the config says; rendering them in that
# order keeps the file honest (and haproxy quiet).
_ACTION_ORDER = [L7Action.REJECT, L7Action.REDIRECT_TO_URL, L7Action.REDIRECT_TO_POOL]
_MAX_SOCKET_PATH = 97
# The syslog socket of an amphora, where haproxy logs (Octavia's haproxy template names it too).
LOG_SOCKET = "/run/rsyslog/octavia/log"


@dataclass(kw_only=True)
class AmphoraPaths(Model):
    """Where the agent keeps a load balancer's files ([haproxy_amphora] base_path and
    base_cert_dir; Octavia's defaults)."""

    base_path: Annotated[str, g.ABSOLUTE_PATH] = "/var/lib/octavia"
    base_cert_dir: Annotated[str, g.ABSOLUTE_PATH] = field(default="/var/lib/octavia/certs")

    def check_consistency(self) -> None:
        # haproxy refuses a stats socket path longer than a sockaddr_un allows it (97 bytes).
        longest = self.stats_socket("0" * 36)
        if len(longest) > _MAX_SOCKET_PATH:
            self._fail("base_path", f"too long: {longest} exceeds {_MAX_SOCKET_PATH} characters")

    def stats_socket(self, lb_id: str) -> str:
        return f"{self.base_path}/{lb_id}.sock"

    @property
    def ping_wrapper(self) -> str:
        """The PING monitor's external check, which the amphora image provides."""
        return f"{self.base_path}/ping-wrapper.sh"

    @property
    def log_socket(self) -> str:
        """Where haproxy sends its log (syslog datagrams): the amphora's receiver listens there
        (rsyslog on Octavia's amphora image, amphora-init on ours), at Octavia's path."""
        return LOG_SOCKET

    @property
    def vrrp_check_script(self) -> str:
        return f"{self.base_path}/vrrp/check_script.sh"

    def cert_dir(self, lb_id: str) -> str:
        return f"{self.base_cert_dir}/{lb_id}"

    def certificate(self, lb_id: str, cert_id: str) -> str:
        return f"{self.cert_dir(lb_id)}/{cert_id}.pem"

    def crt_list(self, lb_id: str, listener_id: str) -> str:
        """Octavia names a listener's crt-list like a certificate: {listener_id}.pem."""
        return f"{self.cert_dir(lb_id)}/{listener_id}.pem"


def _acl_criterion(rule: L7Rule) -> str:
    """The fetch and match method of the ACL that implements rule."""
    fetch = {
        L7RuleType.HOST_NAME: "req.hdr(host) -i",
        L7RuleType.PATH: "path",
        L7RuleType.FILE_TYPE: "path_end",
        L7RuleType.HEADER: f"req.hdr({rule.key})",
        L7RuleType.COOKIE: f"req.cook({rule.key})",
    }[rule.type]
    if rule.type is L7RuleType.FILE_TYPE and rule.compare_type is CompareType.EQUAL_TO:
        return fetch  # path_end matches suffixes by itself; "-m str" would compare whole paths
    return f"{fetch} {_MATCH_FLAG[rule.compare_type]}"


def _policy_condition(policy: L7Policy) -> str:
    return " ".join(("!" if rule.invert else "") + rule.id for rule in policy.rules)


def _active_policies(listener: Listener) -> list[L7Policy]:
    """Policies in execution order. A policy without rules never applies (as in Octavia)."""
    active = [policy for policy in listener.l7policies if policy.rules]
    return sorted(active, key=lambda p: (_ACTION_ORDER.index(p.action), p.position))


def _header_names(listener: Listener) -> set[str]:
    return {header.value for header in listener.insert_headers}


def _checked_amphora_id(amphora_id: str) -> str:
    try:
        return g.UUID(amphora_id)
    except g.GrammarError as exc:
        raise ModelError("amphora_id", str(exc)) from None


def render_haproxy(lb: LoadBalancer, amphora_id: str, paths: AmphoraPaths | None = None) -> str:
    """haproxy.cfg for lb as the amphora amphora_id runs it (the id goes into an X-Amphora-Id
    response header on HTTP listeners, so traffic shows which amphora carried a request)."""
    paths = paths or AmphoraPaths()
    paths.validate()
    lb.validate()
    if not lb.listeners:
        raise ModelError("LoadBalancer.listeners", "haproxy needs at least one listener")
    uses_ping = any(
        pool.health_monitor and pool.health_monitor.type is MonitorType.PING
        for listener in lb.listeners
        for pool in listener.pools
    )
    return _ENV.get_template("haproxy.cfg.j2").render(
        lb=lb,
        amphora_id=_checked_amphora_id(amphora_id),
        paths=paths,
        uses_ping=uses_ping,
        balance=_BALANCE,
        acl_criterion=_acl_criterion,
        policy_condition=_policy_condition,
        active_policies=_active_policies,
        header_names=_header_names,
    )


def render_crt_list(lb: LoadBalancer, listener: Listener, paths: AmphoraPaths | None = None) -> str:
    """The crt-list file of a TERMINATED_HTTPS listener: one certificate file per line, the
    default certificate first; haproxy picks the others by SNI from their names."""
    paths = paths or AmphoraPaths()
    paths.validate()
    lb.validate()
    return "".join(f"{paths.certificate(lb.id, cert.id)}\n" for cert in listener.certificates)


def render_keepalived(
    lb: LoadBalancer,
    amphora: VrrpAmphora,
    subnet: VipSubnet,
    group: VrrpGroup,
    paths: AmphoraPaths | None = None,
) -> str:
    """keepalived.conf of one amphora of an active/standby pair, in the shape Octavia renders:
    the VIP moves with VRRP mastership, replies from the VIP use policy routing table 1."""
    paths = paths or AmphoraPaths()
    for obj in (paths, lb, amphora, subnet, group):
        obj.validate()
    if lb.topology is not Topology.ACTIVE_STANDBY:
        raise ModelError("LoadBalancer.topology", "keepalived is for ACTIVE_STANDBY pairs")
    return _ENV.get_template("keepalived.conf.j2").render(
        lb=lb,
        amphora=amphora,
        subnet=subnet,
        group=group,
        check_script=paths.vrrp_check_script,
        vrrp_instance=lb.id.replace("-", ""),
        vip_prefix=128 if ":" in lb.vip_address else 32,
    )
