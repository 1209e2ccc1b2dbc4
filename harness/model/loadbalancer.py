"""The load-balancer model: what a controller knows about a load balancer, in Octavia's terms.

Every field that can reach a rendered config line carries a grammar (harness.model.grammar). A model
object checks all of them when it is built, and the renderers check the whole tree again before
rendering (objects are mutable, so scenarios can change a weight and push again). A value outside
its grammar raises ModelError naming the field: a hostile value never reaches a template.
"""

import enum
import functools
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields
from typing import Annotated, Any, get_args, get_origin, get_type_hints

from harness.model import grammar as g

# Octavia's defaults ([haproxy_amphora] options, API defaults), except the connection limit:
# Octavia's 50000 per listener needs a file-descriptor limit above 100000 per listener in the
# amphora (haproxy will not start otherwise); 2000 fits the limits hosts and containers have.
DEFAULT_CONNECTION_LIMIT = 2000
DEFAULT_TIMEOUT_CLIENT_DATA_MS = 50000
DEFAULT_TIMEOUT_MEMBER_CONNECT_MS = 5000
DEFAULT_TIMEOUT_MEMBER_DATA_MS = 50000


class ModelError(ValueError):
    """A model value is invalid. `field` names where, e.g. Listener.pools[0].members[1].address."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def new_id() -> str:
    return str(uuid.uuid4())


def _instance_of(item_type: type) -> g.Grammar:
    def check(value: Any) -> Any:
        if not isinstance(value, item_type):
            raise g.GrammarError(f"expected a {item_type.__name__}, got {type(value).__name__}")
        return value

    return check


def many(item_type: type) -> g.Grammar:
    """Grammar of a list of model objects."""
    return g.each(_instance_of(item_type))


def maybe(item_type: type) -> g.Grammar:
    """Grammar of an optional model object."""
    return g.optional(_instance_of(item_type))


# Field types: the grammar travels in the annotation (typing.Annotated).
Id = Annotated[str, g.UUID]
Name = Annotated[str | None, g.optional(g.NAME)]
Address = Annotated[str, g.ip_address]
PortNumber = Annotated[int, g.PORT]
Flag = Annotated[bool, g.boolean]
TimeoutMs = Annotated[int, g.integer(1, 2**31 - 1)]  # haproxy's limit for a timeout


@functools.cache
def _grammars(cls: type) -> dict[str, g.Grammar]:
    """Field name -> grammar, from cls's Annotated type hints (resolved, so that modules using
    `from __future__ import annotations` work too)."""
    hints = get_type_hints(cls, include_extras=True)
    return {
        f.name: get_args(hints[f.name])[1]
        for f in fields(cls)
        if get_origin(hints[f.name]) is Annotated
    }


class Model:
    """Base of the model classes: validation on construction and on demand."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check every field against its grammar (storing the canonical form), then every child
        object, then the rules that tie fields together."""
        owner = type(self).__name__
        for name, grammar in _grammars(type(self)).items():
            try:
                setattr(self, name, grammar(getattr(self, name)))
            except g.GrammarError as exc:
                raise ModelError(f"{owner}.{name}", str(exc)) from None
        for label, obj in self._children():
            try:
                obj.validate()
            except ModelError as exc:
                inner = exc.field.split(".", 1)[1]
                raise ModelError(f"{owner}.{label}.{inner}", exc.problem) from None
        self.check_consistency()

    def _children(self) -> Iterator[tuple[str, "Model"]]:
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, Model):
                yield f.name, value
            elif isinstance(value, list):
                for index, item in enumerate(value):
                    if isinstance(item, Model):
                        yield f"{f.name}[{index}]", item

    def check_consistency(self) -> None:
        """Rules across fields; subclasses raise ModelError."""

    def _fail(self, field_name: str, problem: str) -> None:
        raise ModelError(f"{type(self).__name__}.{field_name}", problem)


class ListenerProtocol(enum.Enum):
    HTTP = "HTTP"
    TCP = "TCP"
    TERMINATED_HTTPS = "TERMINATED_HTTPS"

    @property
    def mode(self) -> str:
        """haproxy's proxy mode for this protocol."""
        return "tcp" if self is ListenerProtocol.TCP else "http"


class Algorithm(enum.Enum):
    ROUND_ROBIN = "ROUND_ROBIN"
    LEAST_CONNECTIONS = "LEAST_CONNECTIONS"
    SOURCE_IP = "SOURCE_IP"


class PersistenceType(enum.Enum):
    SOURCE_IP = "SOURCE_IP"
    HTTP_COOKIE = "HTTP_COOKIE"
    APP_COOKIE = "APP_COOKIE"


class MonitorType(enum.Enum):
    HTTP = "HTTP"
    TCP = "TCP"
    PING = "PING"


class L7Action(enum.Enum):
    REDIRECT_TO_URL = "REDIRECT_TO_URL"
    REDIRECT_TO_POOL = "REDIRECT_TO_POOL"
    REJECT = "REJECT"


class L7RuleType(enum.Enum):
    HOST_NAME = "HOST_NAME"
    PATH = "PATH"
    FILE_TYPE = "FILE_TYPE"
    HEADER = "HEADER"
    COOKIE = "COOKIE"


class CompareType(enum.Enum):
    EQUAL_TO = "EQUAL_TO"
    STARTS_WITH = "STARTS_WITH"
    ENDS_WITH = "ENDS_WITH"
    CONTAINS = "CONTAINS"
    REGEX = "REGEX"


class InsertHeader(enum.Enum):
    X_FORWARDED_FOR = "X-Forwarded-For"
    X_FORWARDED_PORT = "X-Forwarded-Port"
    X_FORWARDED_PROTO = "X-Forwarded-Proto"


class Topology(enum.Enum):
    SINGLE = "SINGLE"
    ACTIVE_STANDBY = "ACTIVE_STANDBY"


# How many amphorae carry a load balancer of each topology.
AMPHORAE_PER_TOPOLOGY = {Topology.SINGLE: 1, Topology.ACTIVE_STANDBY: 2}


@dataclass(kw_only=True)
class Certificate(Model):
    """A TLS certificate for a listener: key, certificate and chain in one PEM, stored on the
    amphora as {base_cert_dir}/{lb_id}/{id}.pem."""

    id: Id = field(default_factory=new_id)
    name: Name = None
    pem: bytes = field(repr=False)

    def check_consistency(self) -> None:
        if not isinstance(self.pem, bytes) or b"-----BEGIN" not in self.pem:
            self._fail("pem", "expected PEM bytes")


@dataclass(kw_only=True)
class Member(Model):
    """A backend server. Weight 0 drains it (no new connections), as in Octavia."""

    id: Id = field(default_factory=new_id)
    name: Name = None
    address: Address
    port: PortNumber
    weight: Annotated[int, g.integer(0, 256)] = 1
    backup: Flag = False
    admin_state_up: Flag = True


@dataclass(kw_only=True)
class HealthMonitor(Model):
    """Times are seconds. max_retries successes bring a member up, max_retries_down failures take
    it down (haproxy's rise and fall)."""

    type: Annotated[MonitorType, g.one_of(MonitorType)]
    delay: Annotated[int, g.integer(1, 86400)] = 5
    timeout: Annotated[int, g.integer(1, 86400)] = 5
    max_retries: Annotated[int, g.integer(1, 10)] = 3
    max_retries_down: Annotated[int, g.integer(1, 10)] = 3
    http_method: Annotated[str, g.HTTP_METHOD] = "GET"
    url_path: Annotated[str, g.URL_PATH] = "/"
    expected_codes: Annotated[str, g.EXPECTED_CODES] = "200"

    @property
    def expected_codes_regex(self) -> str:
        """expected_codes as the alternation `http-check expect rstatus` takes."""
        codes: list[str] = []
        for part in self.expected_codes.split(","):
            low, _, high = part.partition("-")
            codes.extend(str(code) for code in range(int(low), int(high or low) + 1))
        return "|".join(codes)

    def check_consistency(self) -> None:
        for part in self.expected_codes.split(","):
            low, _, high = part.partition("-")
            if high and int(high) < int(low):
                self._fail("expected_codes", f"range {part} is reversed")


@dataclass(kw_only=True)
class SessionPersistence(Model):
    type: Annotated[PersistenceType, g.one_of(PersistenceType)]
    cookie_name: Annotated[str | None, g.optional(g.TOKEN)] = None

    def check_consistency(self) -> None:
        if self.type is PersistenceType.APP_COOKIE and not self.cookie_name:
            self._fail("cookie_name", "APP_COOKIE persistence needs a cookie name")
        if self.type is not PersistenceType.APP_COOKIE and self.cookie_name:
            self._fail("cookie_name", f"only APP_COOKIE persistence takes one ({self.type.value})")


@dataclass(kw_only=True)
class Pool(Model):
    id: Id = field(default_factory=new_id)
    name: Name = None
    algorithm: Annotated[Algorithm, g.one_of(Algorithm)] = Algorithm.ROUND_ROBIN
    members: Annotated[list[Member], many(Member)] = field(default_factory=list)
    health_monitor: Annotated[HealthMonitor | None, maybe(HealthMonitor)] = None
    session_persistence: Annotated[SessionPersistence | None, maybe(SessionPersistence)] = None


# Per rule type, the grammar of an L7 rule's value when it is not a regular expression.
_RULE_VALUE = {
    L7RuleType.HOST_NAME: g.HOST_NAME,
    L7RuleType.PATH: g.PATH_FRAGMENT,
    L7RuleType.FILE_TYPE: g.FILE_EXTENSION,
    L7RuleType.HEADER: g.MATCH_VALUE,
    L7RuleType.COOKIE: g.MATCH_VALUE,
}


@dataclass(kw_only=True)
class L7Rule(Model):
    """One condition of an L7 policy; `key` is the header or cookie name for HEADER/COOKIE."""

    id: Id = field(default_factory=new_id)
    type: Annotated[L7RuleType, g.one_of(L7RuleType)]
    compare_type: Annotated[CompareType, g.one_of(CompareType)]
    value: Annotated[str, g.MATCH_VALUE]
    key: Annotated[str | None, g.optional(g.TOKEN)] = None
    invert: Flag = False

    def check_consistency(self) -> None:
        regex = self.compare_type is CompareType.REGEX
        value_grammar = g.regex if regex else _RULE_VALUE[self.type]
        try:
            value_grammar(self.value)
        except g.GrammarError as exc:
            self._fail("value", f"{exc} (for a {self.type.value} rule)")
        keyed = self.type in (L7RuleType.HEADER, L7RuleType.COOKIE)
        if keyed and not self.key:
            self._fail("key", f"a {self.type.value} rule needs a key (the name to match)")
        if not keyed and self.key:
            self._fail("key", f"a {self.type.value} rule takes no key")
        if self.type is L7RuleType.FILE_TYPE and self.compare_type not in (
            CompareType.EQUAL_TO,
            CompareType.REGEX,
        ):
            self._fail("compare_type", "FILE_TYPE rules compare with EQUAL_TO or REGEX only")


@dataclass(kw_only=True)
class L7Policy(Model):
    """All rules must match for the action to apply (Octavia's semantics). haproxy runs rejects
    before redirects before pool switches whatever their order, so position orders policies
    within each of those groups."""

    id: Id = field(default_factory=new_id)
    name: Name = None
    action: Annotated[L7Action, g.one_of(L7Action)]
    position: Annotated[int, g.integer(1, 2**31 - 1)] = 1
    rules: Annotated[list[L7Rule], many(L7Rule)] = field(default_factory=list)
    redirect_url: Annotated[str | None, g.optional(g.URL)] = None
    redirect_pool_id: Annotated[str | None, g.optional(g.UUID)] = None
    redirect_http_code: Annotated[int, g.one_of_ints(301, 302, 303, 307, 308)] = 302

    def check_consistency(self) -> None:
        wants_url = self.action is L7Action.REDIRECT_TO_URL
        wants_pool = self.action is L7Action.REDIRECT_TO_POOL
        if wants_url != (self.redirect_url is not None):
            self._fail("redirect_url", "set exactly when the action is REDIRECT_TO_URL")
        if wants_pool != (self.redirect_pool_id is not None):
            self._fail("redirect_pool_id", "set exactly when the action is REDIRECT_TO_POOL")


@dataclass(kw_only=True)
class Listener(Model):
    """A frontend. Timeouts are milliseconds; allowed_cidrs empty means everyone."""

    id: Id = field(default_factory=new_id)
    name: Name = None
    protocol: Annotated[ListenerProtocol, g.one_of(ListenerProtocol)]
    port: PortNumber
    connection_limit: Annotated[int, g.integer(1, 1_000_000)] = DEFAULT_CONNECTION_LIMIT
    timeout_client_data: TimeoutMs = DEFAULT_TIMEOUT_CLIENT_DATA_MS
    timeout_member_connect: TimeoutMs = DEFAULT_TIMEOUT_MEMBER_CONNECT_MS
    timeout_member_data: TimeoutMs = DEFAULT_TIMEOUT_MEMBER_DATA_MS
    timeout_tcp_inspect: Annotated[int, g.integer(0, 2**31 - 1)] = 0
    insert_headers: Annotated[list[InsertHeader], g.each(g.one_of(InsertHeader), 3)] = field(
        default_factory=list
    )
    allowed_cidrs: Annotated[list[str], g.each(g.cidr)] = field(default_factory=list)
    certificate: Annotated[Certificate | None, maybe(Certificate)] = None
    sni_certificates: Annotated[list[Certificate], many(Certificate)] = field(default_factory=list)
    pools: Annotated[list[Pool], many(Pool)] = field(default_factory=list)
    default_pool_id: Annotated[str | None, g.optional(g.UUID)] = None
    l7policies: Annotated[list[L7Policy], many(L7Policy)] = field(default_factory=list)

    @property
    def certificates(self) -> list[Certificate]:
        """The default certificate first, then the SNI ones: the crt-list order."""
        return ([self.certificate] if self.certificate else []) + list(self.sni_certificates)

    def pool(self, pool_id: str) -> Pool:
        return next(p for p in self.pools if p.id == pool_id)

    def check_consistency(self) -> None:
        tls = self.protocol is ListenerProtocol.TERMINATED_HTTPS
        if tls != (self.certificate is not None):
            self._fail("certificate", "required for TERMINATED_HTTPS listeners and only for them")
        if self.sni_certificates and not tls:
            self._fail("sni_certificates", "only TERMINATED_HTTPS listeners take them")
        if self.protocol.mode == "tcp":
            if self.insert_headers:
                self._fail("insert_headers", "TCP listeners cannot insert HTTP headers")
            if self.l7policies:
                self._fail("l7policies", "TCP listeners cannot have L7 policies")
            for pool in self.pools:
                sp = pool.session_persistence
                if sp and sp.type is not PersistenceType.SOURCE_IP:
                    self._fail("pools", f"{sp.type.value} persistence needs an HTTP listener")
        if len(set(self.insert_headers)) != len(self.insert_headers):
            self._fail("insert_headers", "a header is listed twice")
        pool_ids = {pool.id for pool in self.pools}
        if self.default_pool_id is not None and self.default_pool_id not in pool_ids:
            self._fail("default_pool_id", f"{self.default_pool_id} is not one of its pools")
        for policy in self.l7policies:
            if policy.redirect_pool_id is not None and policy.redirect_pool_id not in pool_ids:
                self._fail("l7policies", f"{policy.redirect_pool_id} is not one of its pools")


@dataclass(kw_only=True)
class LoadBalancer(Model):
    id: Id = field(default_factory=new_id)
    name: Name = None
    vip_address: Address
    topology: Annotated[Topology, g.one_of(Topology)] = Topology.SINGLE
    # An SR-IOV VIP port (Octavia's vnic_type direct) bypasses security groups: the amphorae
    # filter the VIP themselves, opened per listener port and allowed_cidrs by the controller.
    sriov_vip: Annotated[bool, g.boolean] = False
    listeners: Annotated[list[Listener], many(Listener)] = field(default_factory=list)

    @property
    def is_pair(self) -> bool:
        """An active/standby pair: keepalived holds the VIP on one of two amphorae."""
        return self.topology is Topology.ACTIVE_STANDBY

    def listener(self, key: str) -> Listener:
        """The listener with this id or name."""
        return next(item for item in self.listeners if key in (item.id, item.name))

    def check_consistency(self) -> None:
        ports = [listener.port for listener in self.listeners]
        if len(set(ports)) != len(ports):
            self._fail("listeners", "two listeners share a port")
        ids = [obj_id for obj_id in self._ids()]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            self._fail("listeners", f"ids used twice: {', '.join(duplicates)}")

    def _ids(self) -> Iterator[str]:
        yield self.id
        for listener in self.listeners:
            yield listener.id
            for pool in listener.pools:
                yield pool.id
                yield from (member.id for member in pool.members)
            for policy in listener.l7policies:
                yield policy.id
                yield from (rule.id for rule in policy.rules)


class VrrpRole(enum.Enum):
    """An amphora's role in an active/standby pair and its VRRP priority (Octavia's values)."""

    MASTER = 100
    BACKUP = 90


@dataclass(kw_only=True)
class HostRoute(Model):
    destination: Annotated[str, g.cidr]
    nexthop: Address


@dataclass(kw_only=True)
class VipSubnet(Model):
    """The subnet the VIP lives on, as plug/vip and keepalived's routes need it."""

    cidr: Annotated[str, g.cidr]
    gateway: Annotated[str | None, g.optional(g.ip_address)] = None
    host_routes: Annotated[list[HostRoute], many(HostRoute)] = field(default_factory=list)


@dataclass(frozen=True)
class VipPort:
    """A port on the VIP network attached to an amphora, as the cloud reports it: its MAC and
    fixed IP (the amphora's own address there, vrrp_ip) on the VIP subnet."""

    mac_address: str
    vrrp_ip: str
    subnet: VipSubnet
    mtu: int | None = None

    def plug_request(self, sriov: bool = False, additional_vips: Sequence[str] = ()) -> dict:
        """The body of POST /1.0/plug/vip/{vip}; additional VIPs live on the same subnet."""
        subnet = {
            "subnet_cidr": self.subnet.cidr,
            "gateway": self.subnet.gateway,
            "host_routes": [
                {"destination": route.destination, "nexthop": route.nexthop}
                for route in self.subnet.host_routes
            ],
        }
        body: dict = {
            "is_sriov": sriov,
            **subnet,
            "mac_address": self.mac_address,
            "vrrp_ip": self.vrrp_ip,
        }
        if self.mtu is not None:
            body["mtu"] = self.mtu
        if additional_vips:
            body["additional_vips"] = [{"ip_address": vip, **subnet} for vip in additional_vips]
        return body


@dataclass(frozen=True)
class MemberPort:
    """A port on a member network attached to an amphora, as the cloud reports it: its MAC and
    fixed IP on that network's subnet."""

    mac_address: str
    ip_address: str
    subnet: VipSubnet
    mtu: int | None = None

    def plug_request(self) -> dict:
        """The body of POST /1.0/plug/network."""
        fixed_ip: dict = {"ip_address": self.ip_address, "subnet_cidr": self.subnet.cidr,
                          "host_routes": [{"destination": route.destination,
                                           "nexthop": route.nexthop}
                                          for route in self.subnet.host_routes]}
        if self.subnet.gateway is not None:
            fixed_ip["gateway"] = self.subnet.gateway
        body: dict = {"mac_address": self.mac_address, "fixed_ips": [fixed_ip]}
        if self.mtu is not None:
            body["mtu"] = self.mtu
        return body


@dataclass(kw_only=True)
class VrrpGroup(Model):
    """Settings shared by both amphorae of a pair (Octavia's [keepalived_vrrp] defaults)."""

    vrrp_id: Annotated[int, g.integer(1, 255)] = 1
    auth_pass: Annotated[str, g.VRRP_PASSWORD] = field(default_factory=lambda: uuid.uuid4().hex[:8])
    advert_int: Annotated[int, g.integer(1, 255)] = 1
    garp_refresh: Annotated[int, g.integer(1, 3600)] = 5
    garp_refresh_repeat: Annotated[int, g.integer(1, 100)] = 2
    check_interval: Annotated[int, g.integer(1, 3600)] = 5
    check_fall: Annotated[int, g.integer(1, 100)] = 2
    check_rise: Annotated[int, g.integer(1, 100)] = 2


@dataclass(kw_only=True)
class VrrpAmphora(Model):
    """One amphora of a pair, as its keepalived.conf sees it."""

    amphora_id: Id
    role: Annotated[VrrpRole, g.one_of(VrrpRole)]
    vrrp_ip: Address
    interface: Annotated[str, g.INTERFACE]
    peer_ips: Annotated[list[str], g.each(g.ip_address)] = field(default_factory=list)
