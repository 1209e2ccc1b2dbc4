"""A failure bundle: what a person needs to understand a lab test that failed, taken from the
live lab at the moment of failure (the pytest plugin calls collect_bundle before the lab is torn
down).

    <bundle>/summary.json                       the test, its labs (id, provider, image tags),
                                                what was collected, what could not be
    <bundle>/<lab id>/<amphora>/agent.log       the agent's log (the node's console)
    <bundle>/<lab id>/<amphora>/haproxy.log     haproxy's log (the amphora's syslog socket)
    <bundle>/<lab id>/<amphora>/lb-<id>/haproxy.cfg             as the agent holds it
    <bundle>/<lab id>/<amphora>/lb-<id>/show-stat.csv           haproxy's stats socket
    <bundle>/<lab id>/<amphora>/lb-<id>/show-servers-state.txt
    <bundle>/<lab id>/<amphora>/keepalived.conf, keepalived.log, keepalived-state.txt
    <bundle>/<lab id>/<amphora>/ip-addr.txt, ip-route.txt, ip-rule.txt, nft-ruleset.txt
                                                the data-plane namespace
    <bundle>/traffic-<n>.json                   timelines recorded during the test

Everything inside an amphora is read by one script run in it (provider.exec), so a bundle takes
about a second per amphora and works on either provider, also when the agent is dead.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from harness.lab.constants import DATA_PLANE_NAMESPACE
from harness.lab.lab import LabAmphora
from harness.lab.providers.base import Provider
from harness.observe.traffic import TimelineRecorder
from harness.render.amphora_configs import AmphoraPaths

# Where amphora-init keeps what haproxy logs (images/amphora/amphora-init).
HAPROXY_LOG = "/var/lib/amphora-harness/haproxy.log"
SECTION_MARK = "@@amphora-harness-bundle@@"
# Every command of the script is bounded: a hung haproxy must not hang the report.
COMMAND_TIMEOUT_S = 5
_UNSAFE = re.compile(r"[^A-Za-z0-9_.=-]+")
MAX_NAME = 150


class BundledLab(Protocol):
    """What a bundle needs of a lab (harness.lab.lab.Lab, harness.lab.attach.AttachedLab)."""

    id: str
    provider: Provider
    amphorae: list[LabAmphora]


@dataclass(frozen=True)
class LabSummary:
    """A lab as a report names it."""

    id: str
    provider: str
    images: dict[str, str]  # amphora name -> image tag


def lab_summary(lab: BundledLab) -> LabSummary:
    return LabSummary(id=lab.id, provider=lab.provider.name,
                      images={a.name: a.node.spec.image for a in lab.amphorae})


def bundle_name(test_id: str) -> str:
    """A directory name for a test id: readable, one path component, bounded."""
    name = _UNSAFE.sub("_", test_id).strip("_")
    return name if len(name) <= MAX_NAME else name[:MAX_NAME]


def _script(paths: AmphoraPaths) -> str:
    """A shell script printing each file of the bundle after a SECTION_MARK line naming it."""
    base, vrrp = paths.base_path, f"{paths.base_path}/vrrp"
    run = f"timeout {COMMAND_TIMEOUT_S}"
    ns = f"{run} ip netns exec {DATA_PLANE_NAMESPACE}"
    stats = f"{run} socat -T {COMMAND_TIMEOUT_S} stdio"
    return f"""
section() {{ printf '\\n{SECTION_MARK} %s\\n' "$1"; }}
for cfg in {base}/*/haproxy.cfg; do
    [ -f "$cfg" ] || continue
    lb=$(basename "$(dirname "$cfg")")
    section "lb-$lb/haproxy.cfg"; cat "$cfg"
    section "lb-$lb/show-stat.csv"
    echo "show stat" | {stats} "UNIX-CONNECT:{base}/$lb.sock" 2>&1
    section "lb-$lb/show-servers-state.txt"
    echo "show servers state" | {stats} "UNIX-CONNECT:{base}/$lb.sock" 2>&1
done
section haproxy.log; cat {HAPROXY_LOG} 2>&1
if [ -f {vrrp}/octavia-keepalived.conf ]; then
    section keepalived.conf; cat {vrrp}/octavia-keepalived.conf
    section keepalived.log; cat {vrrp}/octavia-keepalived.log 2>&1
    section keepalived-state.txt
    echo "processes:"; pgrep -a -x keepalived || echo "keepalived is not running"
    echo "addresses held (the VIP is on the MASTER):"
    {ns} ip -brief addr 2>&1
fi
section ip-addr.txt; {ns} ip -d addr 2>&1
section ip-route.txt; {ns} ip -d route show table all 2>&1
section ip-rule.txt; {ns} ip -d rule 2>&1
section nft-ruleset.txt; {ns} nft list ruleset 2>&1
"""


def split_sections(output: str) -> dict[str, str]:
    """The script's output as {relative file name: text}."""
    files: dict[str, str] = {}
    current = None
    for line in output.splitlines(keepends=True):
        if line.startswith(SECTION_MARK):
            current = line[len(SECTION_MARK):].strip()
            files[current] = ""
        elif current is not None:
            files[current] += line
    return files


def _safe_relative(name: str) -> Path:
    """A section name as a path inside the amphora's directory (nothing may climb out)."""
    parts = [_UNSAFE.sub("_", part) for part in Path(name).parts
             if part not in ("", ".", "..", "/")]
    return Path(*parts) if parts else Path("unnamed")


def _collect_amphora(lab: BundledLab, amphora: LabAmphora, directory: Path,
                     errors: list[str]) -> list[str]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    try:
        (directory / "agent.log").write_text(lab.provider.logs(amphora.node))
        written.append("agent.log")
    except Exception as exc:  # a bundle keeps whatever it can get
        errors.append(f"{amphora.name}: agent log: {exc}")
    try:
        result = lab.provider.exec(amphora.node, ["sh", "-c", _script(AmphoraPaths())])
    except Exception as exc:
        errors.append(f"{amphora.name}: {exc}")
        return written
    for name, text in split_sections(result.output).items():
        path = directory / _safe_relative(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path.relative_to(directory).as_posix())
    return written


def collect_bundle(directory: Path, test_id: str, labs: Sequence[BundledLab],
                   recorders: Sequence[TimelineRecorder] = ()) -> Path:
    """Write the bundle of a failed test into directory (made; emptied of an older bundle of
    the same test first); returns directory."""
    directory.mkdir(parents=True, exist_ok=True)
    for old in sorted(directory.rglob("*"), reverse=True):
        old.rmdir() if old.is_dir() else old.unlink()
    errors: list[str] = []
    summary = {"test": test_id, "labs": [], "traffic": [], "errors": errors}
    for lab in labs:
        named = lab_summary(lab)
        amphorae = {}
        for amphora in lab.amphorae:
            amphora_dir = directory / lab.id / bundle_name(amphora.name)
            amphorae[amphora.name] = {
                "id": amphora.id, "image": amphora.node.spec.image,
                "files": _collect_amphora(lab, amphora, amphora_dir, errors)}
        summary["labs"].append({"id": named.id, "provider": named.provider,
                                "amphorae": amphorae})
    for n, recorder in enumerate(recorders):
        name = f"traffic-{n}.json"
        timeline = recorder.snapshot()
        timeline.write_json(directory / name)
        summary["traffic"].append({"file": name, "url": recorder.url,
                                   "samples": len(timeline.samples)})
    (directory / "summary.json").write_text(json.dumps(summary, indent=1))
    return directory
