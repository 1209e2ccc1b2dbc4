"""What a reload's skipped `haproxy -c` would have read (amphora_agent.haproxy_check_inputs):
any change to the config or to a file it can read must show as a difference."""

from __future__ import annotations

import os
from pathlib import Path

from amphora_agent.haproxy_check_inputs import check_inputs

CONFIG = """global
    stats socket {base}/lb.sock mode 0666 level user
    server-state-file {base}/lb/servers-state
    log /dev/log local0
frontend f
    bind 127.0.0.1:443 ssl crt-list {certs}/listener.pem
    http-request deny if {{ path_beg / }}
    http-request set-var(txn.x) src,map_ip({base}/ips.map)
backend b
    server s 127.0.0.1:80
"""


def inputs(tmp_path: Path, text: str | None = None):
    base, certs = tmp_path, tmp_path / "certs" / "lb"
    config = (text or CONFIG).format(base=base, certs=certs).encode()
    return check_inputs(config, certs, base / "lb" / "servers-state", [base / "user-group"])


def setup(tmp_path: Path) -> None:
    certs = tmp_path / "certs" / "lb"
    certs.mkdir(parents=True)
    (certs / "listener.pem").write_text("crt-list\n")
    (certs / "www.pem").write_text("cert\n")
    (tmp_path / "ips.map").write_text("10.0.0.0/8 x\n")
    (tmp_path / "user-group").write_text("global\n")
    (tmp_path / "lb").mkdir()


def replace(path: Path, text: str) -> None:
    temp = path.with_suffix(".tmp")
    temp.write_text(text)
    os.replace(temp, path)


def test_unchanged_files_give_the_same_inputs(tmp_path):
    setup(tmp_path)
    first = inputs(tmp_path)
    assert first is not None
    # The server-state file the agent writes before every reload is not an input.
    (tmp_path / "lb" / "servers-state").write_text("1\n")
    assert inputs(tmp_path) == first


def test_every_change_haproxy_could_read_is_a_difference(tmp_path):
    setup(tmp_path)
    first = inputs(tmp_path)
    assert inputs(tmp_path, CONFIG + "# changed\n") != first
    changes = [
        lambda: replace(tmp_path / "certs" / "lb" / "www.pem", "cert\n"),  # same bytes, new file
        lambda: (tmp_path / "certs" / "lb" / "new.pem").write_text("x"),
        lambda: (tmp_path / "certs" / "lb" / "new.pem").unlink(),
        lambda: replace(tmp_path / "ips.map", "10.0.0.0/8 y\n"),
        lambda: replace(tmp_path / "user-group", "global\n    group nogroup\n"),
        lambda: (tmp_path / "ips.map").unlink(),
    ]
    for change in changes:
        before = inputs(tmp_path)
        change()
        assert inputs(tmp_path) != before, change


def test_what_cannot_be_judged_is_always_checked(tmp_path):
    setup(tmp_path)
    for line in ("    crt-base /etc/ssl\n", "    bind :443 ssl crt relative.pem\n",
                 f"    bind :443 ssl crt {tmp_path}\n", "    errorfile 503 errors/503.http\n",
                 "    http-request set-var(txn.x) src,map_ip(relative.map)\n"):
        assert inputs(tmp_path, CONFIG + "frontend g\n" + line.replace("{", "{{")) is None, line
