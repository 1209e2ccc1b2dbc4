"""Make drivers by name (`harness` | `octavia`, harness.drivers.base) for one set of amphorae.

A DriverFactory is what a suite gets from the pytest plugin's `lb_driver_factory`: call it with a
load balancer and its amphorae's clients, get a driver; it closes every driver it made. Octavia's
driver needs its probe process (one for the whole session: importing Octavia takes seconds),
the lab's driver credentials, and the limits where the lab's amphorae differ from amphora VMs
(harness.drivers.octavia_driver.amphora_limits), measured on the first amphora it meets.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from harness.amphora_api.client import AmphoraClient
from harness.amphora_api.pki import DriverCredentials
from harness.drivers.base import DriverError, LoadBalancerDriver
from harness.drivers.config_diff import ConfigDiffLog, RecordingDriver
from harness.drivers.controller import LoadBalancerController
from harness.drivers.octavia_driver import (
    AmphoraLimits,
    OctaviaLoadBalancerDriver,
    amphora_limits,
)
from harness.drivers.octavia_process import OctaviaProbe
from harness.lab.lab import LabAmphora
from harness.lab.providers.base import Provider
from harness.model.loadbalancer import LoadBalancer, VrrpGroup
from harness.render.amphora_configs import AmphoraPaths

DRIVER_NAMES = ("harness", "octavia")


@dataclass
class OctaviaRuntime:
    """What Octavia's driver needs besides the load balancer: its probe (shared), the driver
    credentials of the amphorae's lab, and how to learn an amphora's open-files limit (None
    when unknown)."""

    probe: Callable[[], OctaviaProbe]
    credentials: DriverCredentials
    open_files_limit: Callable[[AmphoraClient], int | None] = lambda client: None


class DriverFactory:
    """Makes drivers named `name` (each call may name another) and closes them all. With a
    diff_log, each driver records what both drivers render after each push
    (harness.drivers.config_diff)."""

    def __init__(self, name: str, octavia: OctaviaRuntime | None = None,
                 diff_log: ConfigDiffLog | None = None) -> None:
        if name not in DRIVER_NAMES:
            raise DriverError(f"unknown driver {name!r}: one of {', '.join(DRIVER_NAMES)}")
        self.name = name
        self._octavia = octavia
        self._diff_log = diff_log
        self._limits: AmphoraLimits | None = None
        self._made: list[LoadBalancerDriver] = []

    def __call__(self, lb: LoadBalancer, clients: Sequence[AmphoraClient], *,
                 paths: AmphoraPaths | Mapping[str, AmphoraPaths] | None = None,
                 vrrp_group: VrrpGroup | None = None,
                 driver: str | None = None) -> LoadBalancerDriver:
        name = driver or self.name
        made = self.make(name, lb, clients, paths=paths, vrrp_group=vrrp_group)
        if self._diff_log is not None:
            other = next(other for other in DRIVER_NAMES if other != name)
            made = RecordingDriver(made, lambda lb, clients: self.make(
                other, lb, clients, paths=paths, vrrp_group=vrrp_group), self._diff_log)
        self._made.append(made)
        return made

    def make(self, name: str, lb: LoadBalancer, clients: Sequence[AmphoraClient], *,
             paths: AmphoraPaths | Mapping[str, AmphoraPaths] | None = None,
             vrrp_group: VrrpGroup | None = None) -> LoadBalancerDriver:
        """A driver the caller closes itself."""
        if name == "harness":
            return LoadBalancerController(lb, clients, paths=paths, vrrp_group=vrrp_group)
        if name != "octavia":
            raise DriverError(f"unknown driver {name!r}: one of {', '.join(DRIVER_NAMES)}")
        if self._octavia is None:
            raise DriverError("Octavia's driver was not set up for these amphorae")
        if self._limits is None and clients:
            self._limits = amphora_limits(self._octavia.open_files_limit(clients[0]),
                                          clients[0].get_details())
        return OctaviaLoadBalancerDriver(
            self._octavia.probe(), lb, clients, self._octavia.credentials, paths=paths,
            vrrp_group=vrrp_group, limits=self._limits or AmphoraLimits())

    def close(self) -> None:
        while self._made:
            self._made.pop().close()


def amphora_open_files(provider: Provider, amphorae: Sequence[LabAmphora],
                       client: AmphoraClient) -> int | None:
    """The hard open-files limit inside the lab amphora client talks to (None: unlimited or
    not known)."""
    amphora = next((a for a in amphorae if a.id == client.amphora_id), None)
    if amphora is None:
        return None
    shown = provider.exec(amphora.node, ["sh", "-c", "ulimit -Hn"])
    value = shown.output.strip()
    return int(value) if shown.ok and value.isdigit() else None
