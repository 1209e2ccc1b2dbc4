"""The controller's heartbeat receiver.

Amphorae send one UDP datagram per interval: zlib-compressed JSON followed by the 64-byte hex
HMAC-SHA256 of the compressed bytes. The receiver checks the HMAC against the key it currently
trusts (a message under any other key is dropped and counted), decodes the version-3 message and
keeps each amphora's history, from which tests read seq gaps, arrival intervals and summed
statistics deltas.

In a lab the receiver listens on the lb-mgmt network's gateway address (the host's side of that
bridge), which is where amphorae are told their controllers are; `controller` is the
"host:port" entry for their controller_ip_port_list. A lab reached through its engine has no
such address here: its datagrams are received in its gateway node and read back
(Lab.controller_datagrams, harness.lab.reach).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import threading
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from harness.lab.reach import Datagrams, UdpDatagrams
from harness.polling import wait_until

HEX_DIGEST_LEN = 64
# Fields that are deltas since the previous message; "conns" is a current value.
DELTA_FIELDS = ("tx", "rx", "totconns", "ereq")


class HeartbeatError(ValueError):
    """A datagram that is not a valid heartbeat under the trusted key."""


def sign(payload: bytes, key: str) -> bytes:
    return hmac.new(key.encode(), payload, hashlib.sha256).hexdigest().encode()


def encode_heartbeat(message: dict, key: str) -> bytes:
    """The envelope an amphora sends (used by tests to forge messages)."""
    payload = zlib.compress(json.dumps(message).encode(), 9)
    return payload + sign(payload, key)


def decode_heartbeat(envelope: bytes, key: str) -> dict:
    if len(envelope) <= HEX_DIGEST_LEN:
        raise HeartbeatError("datagram too short to hold a payload and an HMAC")
    payload, digest = envelope[:-HEX_DIGEST_LEN], envelope[-HEX_DIGEST_LEN:]
    if not hmac.compare_digest(digest, sign(payload, key)):
        raise HeartbeatError("HMAC does not match the trusted key")
    try:
        message = json.loads(zlib.decompress(payload))
    except (zlib.error, ValueError) as exc:
        raise HeartbeatError(f"payload does not decode: {exc}") from exc
    if not isinstance(message, dict) or message.get("ver") != 3:
        raise HeartbeatError(f"not a version 3 message: {str(message)[:80]}")
    for required in ("id", "seq", "listeners", "pools"):
        if required not in message:
            raise HeartbeatError(f"message lacks {required!r}")
    return message


@dataclass(frozen=True)
class Heartbeat:
    received_at: float
    source: tuple[str, int]
    message: dict

    @property
    def seq(self) -> int:
        return int(self.message["seq"])


@dataclass
class AmphoraHistory:
    heartbeats: list[Heartbeat] = field(default_factory=list)

    @property
    def seqs(self) -> list[int]:
        return [hb.seq for hb in self.heartbeats]

    def seq_gaps(self) -> list[tuple[int, int]]:
        """Pairs (previous, next) of consecutive messages whose seq did not go up by one."""
        seqs = self.seqs
        return [(a, b) for a, b in itertools.pairwise(seqs) if b != a + 1]

    def intervals(self, since: float = 0.0) -> list[float]:
        """Seconds between consecutive arrivals, both after `since`."""
        times = [hb.received_at for hb in self.heartbeats if hb.received_at >= since]
        return [b - a for a, b in itertools.pairwise(times)]

    def summed(self, listener_id: str, stat: str, since: float = 0.0) -> int:
        """The sum of one listener's delta field over messages received after `since`."""
        if stat not in DELTA_FIELDS:
            raise ValueError(f"{stat} is not a delta field ({', '.join(DELTA_FIELDS)})")
        total = 0
        for hb in self.heartbeats:
            if hb.received_at < since:
                continue
            listener = hb.message["listeners"].get(listener_id)
            if listener:
                total += int(listener["stats"][stat])
        return total

    def totals(self, listener_id: str) -> dict[str, int]:
        """Every delta field of one listener, summed over the whole history."""
        return {stat: self.summed(listener_id, stat) for stat in DELTA_FIELDS}

    def latest(self) -> Heartbeat | None:
        return self.heartbeats[-1] if self.heartbeats else None


class HeartbeatReceiver:
    """Verifies, decodes and records heartbeats in a background thread, from a UDP socket here
    (host, port) or from other datagrams (a lab node's, read back through its engine)."""

    def __init__(self, key: str, host: str = "127.0.0.1", port: int = 0, *,
                 datagrams: Datagrams | None = None) -> None:
        self._key = key
        self._datagrams = datagrams or UdpDatagrams(host, port)
        self.address: tuple[str, int] = self._datagrams.address
        self._lock = threading.Lock()
        self._histories: defaultdict[str, AmphoraHistory] = defaultdict(AmphoraHistory)
        self.dropped: list[tuple[float, str]] = []
        # Drops per sender address: a dropped message's own id cannot be trusted, its source can.
        self._dropped_by_host: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat-receiver", daemon=True)

    def __enter__(self) -> HeartbeatReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        self._datagrams.close()

    @property
    def controller(self) -> str:
        """This receiver as an entry of an amphora's controller_ip_port_list."""
        host, port = self.address
        return f"{host}:{port}"

    @property
    def key(self) -> str:
        with self._lock:
            return self._key

    def agent_settings(self, interval_s: float) -> dict:
        """harness.lab.agent_config.AgentSettings fields that make an amphora send its heartbeats
        here, every interval_s seconds, under the key this receiver trusts now."""
        return {"controllers": [self.controller], "heartbeat_key": self.key,
                "heartbeat_interval": interval_s}

    def set_key(self, key: str) -> None:
        """Trust only `key` from now on (as a controller does after rotating it)."""
        with self._lock:
            self._key = key

    def dropped_from(self, host: str) -> int:
        """How many datagrams from this address were dropped."""
        with self._lock:
            return self._dropped_by_host[host]

    def history(self, amphora_id: str) -> AmphoraHistory:
        with self._lock:
            return AmphoraHistory(list(self._histories[amphora_id].heartbeats))

    def amphora_ids(self) -> list[str]:
        with self._lock:
            return [k for k, v in self._histories.items() if v.heartbeats]

    def totals(self, listener_id: str, amphora_ids: Iterable[str]) -> dict[str, int]:
        """One listener's delta fields summed over every heartbeat of these amphorae (an
        active/standby pair reports the same listener from both)."""
        histories = [self.history(amphora_id) for amphora_id in amphora_ids]
        return {stat: sum(h.summed(listener_id, stat) for h in histories)
                for stat in DELTA_FIELDS}

    def settled_totals(
        self, listener_id: str, amphora_ids: Iterable[str], totconns: int,
        settle_heartbeats: int = 3, timeout: float = 30.0,
    ) -> dict[str, int]:
        """Wait until the amphorae reported at least `totconns` connections on the listener,
        then for `settle_heartbeats` more heartbeats from each (a count reported twice, or
        bytes of the last connections, would show up in those), and return the totals.

        Counts only ever add up, so a lost count shows as a total that never reaches
        `totconns` (returned after the timeout for the caller to compare) and a doubled one
        as a total above it."""
        amphora_ids = list(amphora_ids)
        deadline = time.monotonic() + timeout
        while (self.totals(listener_id, amphora_ids)["totconns"] < totconns
               and time.monotonic() < deadline):
            time.sleep(0.05)
        now = time.time()
        for amphora_id in amphora_ids:
            self.wait_for(amphora_id, count=settle_heartbeats, after=now,
                          timeout=max(deadline - time.monotonic(), 0.0) + 10.0)
        return self.totals(listener_id, amphora_ids)

    def wait_until(self, condition: Callable[[], bool], timeout: float = 30.0,
                   what: str = "condition") -> None:
        """Poll condition (typically on the latest heartbeats) until it holds; bounded."""
        wait_until(condition, timeout, what)

    def wait_for(
        self, amphora_id: str, count: int = 1, after: float = 0.0, timeout: float = 30.0
    ) -> list[Heartbeat]:
        """Wait until `count` heartbeats of an amphora arrived after time `after`."""
        deadline = time.monotonic() + timeout
        while True:
            got = [hb for hb in self.history(amphora_id).heartbeats if hb.received_at > after]
            if len(got) >= count:
                return got
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{len(got)} of {count} heartbeats from {amphora_id} within {timeout}s "
                    f"(dropped so far: {len(self.dropped)})"
                )
            time.sleep(0.05)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                received = self._datagrams.receive(0.2)
            except OSError:
                return
            if received is None:
                continue
            data, source = received
            now = time.time()
            with self._lock:
                key = self._key
            try:
                message = decode_heartbeat(data, key)
            except HeartbeatError as exc:
                with self._lock:
                    self.dropped.append((now, str(exc)))
                    self._dropped_by_host[source[0]] += 1
                continue
            with self._lock:
                self._histories[str(message["id"])].heartbeats.append(
                    Heartbeat(now, source, message)
                )



class ListenerTally:
    """What a test sent through one listener, to hold against what heartbeats summed up.

    Tests add every connection they make to the listener; settled() waits until the heartbeats
    account for them all (and a little longer) and returns the summed totals."""

    def __init__(self, receiver: HeartbeatReceiver, listener_id: str,
                 amphora_ids: Iterable[str]) -> None:
        self.receiver = receiver
        self.listener_id = listener_id
        self.amphora_ids = list(amphora_ids)
        self.connections = 0

    def add(self, connections: int) -> None:
        self.connections += connections

    def settled(self, timeout: float = 30.0) -> dict[str, int]:
        return self.receiver.settled_totals(self.listener_id, self.amphora_ids,
                                            self.connections, timeout=timeout)
