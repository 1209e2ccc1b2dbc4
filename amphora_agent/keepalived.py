"""keepalived supervision: VRRP for an active/standby pair, in the data-plane namespace.

The driver uploads a keepalived.conf rendered by Octavia's template (unicast peers, nopreempt,
virtual routes and rules, `track_script` naming {base_path}/vrrp/check_script.sh). The agent
keeps the Octavia layout under {base_path}/vrrp/ and provides that check script: it runs every
script in check_scripts/, one of which fails when any configured haproxy does not answer.

keepalived runs VRRP only, in the foreground of its own session with its own pid files under
base_path (so several agents on one host never share a pid file) and its log in
octavia-keepalived.log. It is not tied to the agent: after an agent restart the pid file and
/proc find it again. Which amphora is MASTER is read from the namespace: the one that carries a
virtual address of the config holds the VIP.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import re
import signal
import subprocess
import sys
from pathlib import Path

import psutil

import amphora_agent
from amphora_agent import iproute, netns
from amphora_agent.config import AgentConfig
from amphora_agent.fsutil import atomic_write
from amphora_agent.processes import run_command, terminate_all, terminate_tree, wait_for

LOG = logging.getLogger(__name__)

CHECK_TIMEOUT_S = 30.0
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0
LOG_TAIL_BYTES = 4000
ACTIVE_STANDBY = "ACTIVE_STANDBY"
# keepalived -t exits 6 when scripts would run as root without script_security, which is how
# Octavia's configs run their check script; but then it exits 6 whatever else it found, so its
# output decides: nothing but that notice.
CONFIG_TEST_SECURITY_EXIT = 6
SCRIPT_SECURITY_NOTICE = "scripts are being executed but script_security not enabled"

# Octavia's check_script.sh: run every check, fail if any fails.
_CHECK_SCRIPT = """#!/bin/sh
# Written by the amphora agent: keepalived's track script runs every check in {checks_dir}.
status=0
for check in "{checks_dir}"/*; do
    [ -f "$check" ] || continue
    sh "$check" || status=$((status + 1))
done
exit $status
"""
_HAPROXY_CHECK = """#!/bin/sh
# Written by the amphora agent: fails when a configured haproxy does not answer.
PYTHONPATH="{package_root}" exec "{python}" -m amphora_agent.vrrp_check "{base_path}"
"""


class KeepalivedError(Exception):
    """keepalived refused a config or an action; output is what it printed."""

    def __init__(self, output: str) -> None:
        super().__init__(output)
        self.output = output


def block_addresses(config_text: str, keyword: str) -> list[str]:
    """The leading address of every line in the `keyword { ... }` blocks of a keepalived config
    (virtual_ipaddress, virtual_ipaddress_excluded, unicast_peer)."""
    addresses = []
    for block in re.finditer(rf"\b{keyword}\s*\{{([^}}]*)\}}", config_text):
        for line in block.group(1).splitlines():
            token = line.split("#", 1)[0].split()
            if token:
                with contextlib.suppress(ValueError):
                    addresses.append(str(ipaddress.ip_interface(token[0]).ip))
    return addresses


def virtual_addresses(config_text: str) -> list[str]:
    """The addresses in the virtual_ipaddress blocks of a keepalived config (not _excluded)."""
    return block_addresses(config_text, "virtual_ipaddress")


class KeepalivedSupervisor:
    """Installs the config and check scripts, starts, stops, reloads and finds keepalived.

    Callers serialize actions (the API holds context.lock("vrrp")); queries are thread-safe.
    """

    def __init__(self, config: AgentConfig) -> None:
        self._config = config
        self._child: subprocess.Popen | None = None

    # --- layout (Octavia's file names) ------------------------------------------------------

    @property
    def vrrp_dir(self) -> Path:
        return self._config.vrrp_dir

    @property
    def config_path(self) -> Path:
        return self.vrrp_dir / "octavia-keepalived.conf"

    @property
    def pid_path(self) -> Path:
        return self.vrrp_dir / "octavia-keepalived.pid"

    @property
    def vrrp_pid_path(self) -> Path:
        return self.vrrp_dir / "octavia-keepalived-vrrp.pid"

    @property
    def checkers_pid_path(self) -> Path:
        return self.vrrp_dir / "octavia-keepalived-checkers.pid"

    @property
    def log_path(self) -> Path:
        return self.vrrp_dir / "octavia-keepalived.log"

    @property
    def check_script_path(self) -> Path:
        return self.vrrp_dir / "check_script.sh"

    @property
    def check_scripts_dir(self) -> Path:
        return self.vrrp_dir / "check_scripts"

    # --- queries ----------------------------------------------------------------------------

    def configured(self) -> bool:
        return self.config_path.is_file()

    def main_process(self) -> psutil.Process | None:
        """The live keepalived parent started on our config, or None."""
        if self._child is not None and self._child.poll() is not None:
            self._child = None  # reaped: it was our child and it exited
        try:
            pid = int(self.pid_path.read_text().split()[0])
            process = psutil.Process(pid)
            alive = process.status() != psutil.STATUS_ZOMBIE
            ours = str(self.config_path) in process.cmdline()
        except (OSError, ValueError, IndexError, psutil.Error):
            return None
        return process if alive and ours else None

    def is_running(self) -> bool:
        return self.main_process() is not None

    def leftover_processes(self) -> list[psutil.Process]:
        """keepalived processes started on our config and pid file, other than a live parent:
        the VRRP child of a parent that was killed lives on for a moment to hand the VIP back,
        and on its way out it deletes the VRRP pid file, the new parent's included."""
        main = self.main_process()
        family = {main.pid, *(child.pid for child in _children(main))} if main else set()
        # Only a running keepalived is given our pid file (config tests are not).
        return [process for process in psutil.process_iter(["cmdline"])
                if str(self.pid_path) in (process.info["cmdline"] or [])
                and process.pid not in family]

    def holds_vip(self) -> bool:
        """True when this amphora carries a virtual address of the config (VRRP MASTER)."""
        try:
            wanted = virtual_addresses(self.config_path.read_text(errors="replace"))
            return any(iproute.interface_with_address(self._config.network_namespace, address)
                       for address in wanted)
        except (OSError, iproute.IPCommandError):
            return False

    def topology(self, configured_topology: str) -> dict[str, str | bool]:
        """/details' topology, topology_status and active, from the uploaded keepalived config
        and the VRRP state: an amphora with a VRRP config is half of an active/standby pair,
        healthy while keepalived runs, and active while it holds the VIP."""
        if not self.configured():
            return {"topology": configured_topology, "topology_status": "OK",
                    "active": configured_topology != ACTIVE_STANDBY}
        running = self.is_running()
        return {"topology": ACTIVE_STANDBY, "topology_status": "OK" if running else "ERROR",
                "active": running and self.holds_vip()}

    # --- actions ----------------------------------------------------------------------------

    def write_check_scripts(self) -> None:
        """(Re)write check_script.sh and the haproxy check keepalived's track_script runs."""
        self.check_scripts_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.check_script_path,
                     _CHECK_SCRIPT.format(checks_dir=self.check_scripts_dir).encode(), mode=0o755)
        package_root = Path(amphora_agent.__file__).resolve().parent.parent
        haproxy_check = _HAPROXY_CHECK.format(package_root=package_root, python=sys.executable,
                                              base_path=self._config.base_path)
        atomic_write(self.check_scripts_dir / "haproxy_check_script.sh", haproxy_check.encode(),
                     mode=0o755)

    def check(self, config_file: Path) -> None:
        """keepalived's own config test, inside the namespace where its interfaces are."""
        argv = netns.in_namespace(self._config.network_namespace,
                                  [self._config.keepalived_cmd, "--vrrp", "-t",
                                   "-f", str(config_file)])
        result = run_command(argv, CHECK_TIMEOUT_S, KeepalivedError)
        complaints = [line for line in result.stdout.splitlines()
                      if line.strip() and SCRIPT_SECURITY_NOTICE not in line]
        if result.returncode == 0 or (result.returncode == CONFIG_TEST_SECURITY_EXIT
                                      and not complaints):
            return
        raise KeepalivedError(result.stdout.strip() or
                              f"keepalived -t exited with {result.returncode}")

    def install_config(self, data: bytes) -> None:
        """Replace the config only if keepalived accepts it; a rejected one changes nothing."""
        self._ensure_namespace()
        self.write_check_scripts()
        atomic_write(self.config_path, data, mode=0o644, validate=self.check)

    def start(self) -> str:
        """Start keepalived; reload it if it runs already (as Octavia's agent does).

        Returns the action taken: "start" or "reload".
        """
        if self.is_running():
            return self.reload()
        if not self.configured():
            raise KeepalivedError("no keepalived configuration has been uploaded")
        self._ensure_namespace()
        self.write_check_scripts()
        self.check(self.config_path)
        self._clear_leftovers()
        for stale in (self.pid_path, self.vrrp_pid_path, self.checkers_pid_path):
            stale.unlink(missing_ok=True)
        argv = netns.in_namespace(
            self._config.network_namespace,
            [self._config.keepalived_cmd, "--vrrp", "--dont-fork", "--log-console",
             "--log-detail", "-f", str(self.config_path), "-p", str(self.pid_path),
             "-r", str(self.vrrp_pid_path), "-c", str(self.checkers_pid_path)],
        )
        with open(self.log_path, "ab") as log:
            try:
                # Its own session: signals to the agent's process group never reach it.
                self._child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                               stderr=subprocess.STDOUT, start_new_session=True)
            except OSError as exc:
                raise KeepalivedError(f"cannot run keepalived: {exc.strerror}") from exc

        def up() -> bool:
            if self._child is not None and self._child.poll() is not None:
                raise KeepalivedError(f"keepalived exited at start\n{self._log_tail()}")
            return self.is_running() and self.vrrp_pid_path.is_file()

        if not wait_for(up, START_TIMEOUT_S):
            raise KeepalivedError(f"keepalived did not come up\n{self._log_tail()}")
        LOG.info("keepalived started, pid %s", self.main_process().pid)
        return "start"

    def reload(self) -> str:
        """Make keepalived re-read its config (SIGHUP); start it if it does not run."""
        process = self.main_process()
        if process is None:
            return self.start()
        self.write_check_scripts()
        self.check(self.config_path)
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(signal.SIGHUP)
        return "reload"

    def stop(self) -> str:
        """Stop keepalived (it removes its VIPs, routes and rules as it goes)."""
        process = self.main_process()
        if process is not None:
            survivors = terminate_tree(process, STOP_TIMEOUT_S)
            if survivors:
                raise KeepalivedError(f"keepalived processes {survivors} did not exit")
            if self._child is not None:
                self._child.poll()
                self._child = None
        self._clear_leftovers()
        for pid_file in (self.pid_path, self.vrrp_pid_path, self.checkers_pid_path):
            pid_file.unlink(missing_ok=True)
        return "stop"

    # --- internals --------------------------------------------------------------------------

    def _ensure_namespace(self) -> None:
        try:
            netns.ensure_namespace(self._config.network_namespace)
        except subprocess.CalledProcessError as exc:
            raise KeepalivedError(
                f"cannot prepare namespace {self._config.network_namespace}: "
                f"{(exc.stderr or b'').decode(errors='replace').strip()}") from exc

    def _clear_leftovers(self) -> None:
        survivors = terminate_all(self.leftover_processes(), STOP_TIMEOUT_S)
        if survivors:
            raise KeepalivedError(f"leftover keepalived processes {survivors} did not exit")

    def _log_tail(self) -> str:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(0, 2)
                log.seek(max(0, log.tell() - LOG_TAIL_BYTES))
                return log.read().decode(errors="replace")
        except OSError:
            return ""


def _children(process: psutil.Process) -> list[psutil.Process]:
    try:
        return process.children(recursive=True)
    except psutil.Error:
        return []

