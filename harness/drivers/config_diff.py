"""Both drivers' haproxy.cfg for the same model, side by side: where our renderer and Octavia's
templates differ, that is data (`--diff-configs` on the pytest plugin).

A RecordingDriver drives as the driver it wraps does; after every push (create, update,
replace_amphora, rotate_certificate) it asks that driver and a driver of the other kind for the
haproxy.cfg each renders for the current model (rendered, not sent) and hands both to a
ConfigDiffLog, which writes one Markdown file per test: per push and amphora a table, the two
configs aligned line by line, differing lines marked.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness.amphora_api.client import AmphoraClient
from harness.drivers.base import LoadBalancerDriver, StoredFile
from harness.model.loadbalancer import Certificate, LoadBalancer, MemberPort, VipPort
from harness.render.amphora_configs import AmphoraPaths

# Opcodes of difflib.SequenceMatcher as the report's marks.
MARKS = {"equal": " ", "replace": "~", "delete": "<", "insert": ">"}


@dataclass
class Rendering:
    """One push: what each driver renders for each amphora."""

    label: str
    configs: dict[str, dict[str, str]]  # driver name -> amphora id -> haproxy.cfg


@dataclass
class ConfigDiffLog:
    """Renderings by test; write() turns a test's into its report."""

    current: str | None = None
    renderings: dict[str, list[Rendering]] = field(default_factory=dict)

    def add(self, rendering: Rendering) -> None:
        self.renderings.setdefault(self.current or "outside any test", []).append(rendering)

    def write(self, test_id: str, directory: Path) -> Path | None:
        renderings = self.renderings.pop(test_id, [])
        if not renderings:
            return None
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{file_name(test_id)}.md"
        path.write_text(report(test_id, renderings))
        return path


def file_name(test_id: str) -> str:
    """A test id as a file name: path separators, brackets and colons made safe."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", test_id).strip("_")


def report(test_id: str, renderings: Sequence[Rendering]) -> str:
    lines = [f"# haproxy.cfg by driver: `{test_id}`", ""]
    for rendering in renderings:
        (left_name, left), (right_name, right) = rendering.configs.items()
        for amphora_id in left:
            lines += [f"## {rendering.label}, amphora `{amphora_id}`", ""]
            lines += side_by_side(left_name, left[amphora_id], right_name,
                                  right.get(amphora_id, ""))
            lines.append("")
    return "\n".join(lines)


def side_by_side(left_name: str, left: str, right_name: str, right: str) -> list[str]:
    """A Markdown table of two texts aligned line by line (difflib), with a summary line."""
    a, b = left.splitlines(), right.splitlines()
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    differing = sum(max(i2 - i1, j2 - j1) for tag, i1, i2, j1, j2 in matcher.get_opcodes()
                    if tag != "equal")
    summary = "identical" if not differing else f"{differing} of {max(len(a), len(b))} lines differ"
    rows = [summary, "", f"| | {left_name} | {right_name} |", "|---|---|---|"]
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        for offset in range(max(i2 - i1, j2 - j1)):
            left_line = a[i1 + offset] if i1 + offset < i2 else ""
            right_line = b[j1 + offset] if j1 + offset < j2 else ""
            rows.append(f"| {MARKS[tag]} | {_cell(left_line)} | {_cell(right_line)} |")
    return rows


def _cell(line: str) -> str:
    if not line.strip():
        return ""
    return "`" + line.replace("|", "\\|").replace("`", "'") + "`"


class RecordingDriver:
    """driver, recording both renderers' configs after each push (see the module docstring).
    shadow(lb, clients) makes a driver of the other kind for the same amphorae; it only
    renders."""

    def __init__(self, driver: LoadBalancerDriver,
                 shadow: Callable[[LoadBalancer, Sequence[AmphoraClient]], LoadBalancerDriver],
                 log: ConfigDiffLog) -> None:
        self.driver = driver
        self._shadow = shadow
        self._log = log
        self._pushes = 0

    @property
    def name(self) -> str:
        return self.driver.name

    @property
    def lb(self) -> LoadBalancer:
        return self.driver.lb

    @lb.setter
    def lb(self, value: LoadBalancer) -> None:
        self.driver.lb = value

    @property
    def clients(self) -> list[AmphoraClient]:
        return self.driver.clients

    def create(self, vip_ports: Sequence[VipPort] | None = None,
               member_ports: Sequence[MemberPort] | None = None) -> None:
        self.driver.create(vip_ports, member_ports)
        self._record("create")

    def update(self) -> None:
        self.driver.update()
        self._record("update")

    def delete(self) -> None:
        self.driver.delete()

    def replace_amphora(self, lost_amphora_id: str, client: AmphoraClient, vip_port: VipPort,
                        member_port: MemberPort | None = None,
                        paths: AmphoraPaths | None = None) -> None:
        self.driver.replace_amphora(lost_amphora_id, client, vip_port, member_port, paths)
        self._record(f"replace_amphora {lost_amphora_id}")

    def rotate_certificate(self, old: Certificate, new: Certificate) -> None:
        self.driver.rotate_certificate(old, new)
        self._record("rotate_certificate")

    def adopt(self, vip_ports: Sequence[VipPort]) -> None:
        self.driver.adopt(vip_ports)

    def configure_vrrp(self) -> None:
        self.driver.configure_vrrp()

    def certificate_file(self, cert: Certificate) -> StoredFile:
        return self.driver.certificate_file(cert)

    def rendered_configs(self) -> dict[str, str]:
        return self.driver.rendered_configs()

    def close(self) -> None:
        self.driver.close()

    def _record(self, label: str) -> None:
        self._pushes += 1
        other = self._shadow(self.lb, self.clients)
        try:
            configs = {self.driver.name: self.driver.rendered_configs(),
                       other.name: other.rendered_configs()}
        finally:
            other.close()
        self._log.add(Rendering(f"push {self._pushes} ({label}) of `{self.lb.id}`", configs))
