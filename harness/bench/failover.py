"""failover_downtime_s: a fresh active/standby pair (the failover suite's VRRP timers,
harness.lab.constants.FAILOVER_VRRP), settled on a master, then a recorder sending a new
connection through the VIP every 20 ms while the MASTER is hard-killed or gracefully stopped.
The metric is the timeline's down time after the fault (Timeline.downtime), the same measure the
failover suite reports.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from harness.bench.plan import BenchError, http_lb, vip_url
from harness.bench.results import Samples
from harness.drivers.controller import LoadBalancerController
from harness.lab.constants import FAILOVER_VRRP
from harness.lab.lab import Lab, LabMember
from harness.lab.providers.base import ProviderError
from harness.model.loadbalancer import Topology
from harness.observe.traffic import Timeline, TimelineRecorder
from harness.observe.vip import settled_master

RECORDER_INTERVAL_S = 0.02
RECORDER_TIMEOUT_S = 1.0
PAIR_SETTLE_TIMEOUT_S = 40.0
TAKEOVER_TIMEOUT_S = 30.0
# Recorded before the fault and after the takeover, so that the timeline shows both sides.
STEADY_RECORDING_S = 1.0


def conditions() -> dict[str, Any]:
    """How the failovers are measured, for the results file."""
    timers = {name: getattr(FAILOVER_VRRP, name)
              for name in ("advert_int", "check_interval", "check_fall", "check_rise")}
    return {"vrrp": timers, "recorder_interval_s": RECORDER_INTERVAL_S,
            "recorder_timeout_s": RECORDER_TIMEOUT_S}


def measure_failover(lab: Lab, member: LabMember, kind: str, samples: Samples,
                     say: Callable[[str], None]) -> Timeline:
    """One failover of `kind` ("hard_kill" or "graceful_stop") on a new pair; adds its down
    time to samples and returns its timeline. The pair is killed afterwards, to leave the CPU
    to what follows."""
    say(f"failover {kind}: booting a pair")
    pair = lab.add_amphorae(2, topology=Topology.ACTIVE_STANDBY.value)
    try:
        vip = lab.allocate_vip()
        ports = []
        for amphora in pair:
            lab.plug_member_network(amphora)
            ports.append(lab.attach_vip_port(amphora))
        lb = http_lb(vip, [member], topology=Topology.ACTIVE_STANDBY)
        LoadBalancerController(lb, [a.client for a in pair],
                               vrrp_group=FAILOVER_VRRP).create(ports)
        url = vip_url(lb)
        master_id = settled_master(url, PAIR_SETTLE_TIMEOUT_S, error=BenchError)
        master = next(a for a in pair if a.id == master_id)
        survivor = next(a for a in pair if a is not master)
        say(f"failover {kind}: {'killing' if kind == 'hard_kill' else 'stopping'} the MASTER")
        with TimelineRecorder(url, interval=RECORDER_INTERVAL_S, timeout=RECORDER_TIMEOUT_S,
                              max_duration=TAKEOVER_TIMEOUT_S + 30) as recorder:
            time.sleep(STEADY_RECORDING_S)
            fault_at = recorder.now()
            recorder.mark(f"{kind.replace('_', ' ')} MASTER")
            if kind == "hard_kill":
                lab.provider.kill(master.node)
            else:
                lab.provider.stop(master.node)
            recovered = recorder.wait_until(
                lambda t: survivor.id in t.answered_by(since=fault_at), TAKEOVER_TIMEOUT_S)
            time.sleep(STEADY_RECORDING_S)
        timeline = recorder.snapshot()
        if not recovered:
            raise BenchError(f"failover {kind}: the BACKUP did not take over within "
                             f"{TAKEOVER_TIMEOUT_S:.0f}s")
        samples.add(f"failover_downtime_s[{kind}]", timeline.downtime(fault_at))
        return timeline
    finally:
        for amphora in pair:
            with contextlib.suppress(ProviderError):  # the stopped or killed MASTER
                lab.provider.kill(amphora.node)
