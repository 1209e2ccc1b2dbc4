"""The heartbeat receiver: envelope checks, decoding, history — over real UDP on loopback."""

from __future__ import annotations

import socket
import time
import zlib

import pytest

from harness.observe.heartbeats import (
    HeartbeatError,
    HeartbeatReceiver,
    decode_heartbeat,
    encode_heartbeat,
    sign,
)

AMP = "9c4bd2a4-1f7d-4c0e-9a53-3f0f8a9e6b11"
LISTENER = "0b7a3f56-8f0c-4b0e-9f57-6a7b1d2c3e4f"


def message(seq: int, totconns: int = 0, tx: int = 0) -> dict:
    return {
        "id": AMP,
        "seq": seq,
        "ver": 3,
        "listeners": {
            LISTENER: {
                "status": "OPEN",
                "stats": {"tx": tx, "rx": 0, "conns": 1, "totconns": totconns, "ereq": 0},
            }
        },
        "pools": {},
    }


def send(receiver: HeartbeatReceiver, data: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(data, receiver.address)


def test_round_trip_keeps_every_field():
    assert decode_heartbeat(encode_heartbeat(message(7, 3), "k"), "k") == message(7, 3)


@pytest.mark.parametrize(
    "envelope, reason",
    [
        (encode_heartbeat(message(1), "other-key"), "HMAC"),
        (b"short", "too short"),
        (b"not zlib" + sign(b"not zlib", "k"), "does not decode"),
        (
            zlib.compress(b'{"ver": 2}') + sign(zlib.compress(b'{"ver": 2}'), "k"),
            "version 3",
        ),
    ],
)
def test_invalid_envelopes_are_refused(envelope: bytes, reason: str):
    with pytest.raises(HeartbeatError, match=reason):
        decode_heartbeat(envelope, "k")


def test_receiver_records_history_and_drops_bad_messages():
    with HeartbeatReceiver(key="k") as receiver:
        start = time.time() - 1
        for seq, (conns, tx) in enumerate([(2, 100), (3, 50)], start=1):
            send(receiver, encode_heartbeat(message(seq, conns, tx), "k"))
        send(receiver, encode_heartbeat(message(3), "wrong"))
        send(receiver, encode_heartbeat(message(5, 4), "k"))
        beats = receiver.wait_for(AMP, count=3, timeout=5)
        deadline = time.monotonic() + 5
        while not receiver.dropped and time.monotonic() < deadline:
            time.sleep(0.02)
        history = receiver.history(AMP)
        assert [hb.seq for hb in beats] == [1, 2, 5]
        assert history.seq_gaps() == [(2, 5)]
        assert history.summed(LISTENER, "totconns", since=start) == 9
        assert history.summed(LISTENER, "tx") == 150
        assert len(receiver.dropped) == 1
        assert "HMAC" in receiver.dropped[0][1]
        with pytest.raises(ValueError, match="not a delta"):
            history.summed(LISTENER, "conns")


def test_key_rotation_rejects_the_old_key():
    with HeartbeatReceiver(key="old") as receiver:
        receiver.set_key("new")
        send(receiver, encode_heartbeat(message(1), "old"))
        send(receiver, encode_heartbeat(message(2), "new"))
        assert [hb.seq for hb in receiver.wait_for(AMP, count=1, timeout=5)] == [2]
        assert len(receiver.dropped) == 1
