"""haproxy supervision: one master-worker haproxy per load balancer, with no systemd.

Each load balancer's haproxy runs as `haproxy -Ws -D -p PIDFILE -f CFG`: a daemonized master that
is not the agent's child, so it outlives the agent. Everything the agent needs to find it again
after a restart is on disk: the config and the master's pid file under {base_path}/{lb_id}/,
checked against /proc (the pid must belong to a live haproxy whose command line names that
config, so a recycled pid is never mistaken for it).

A reload is SIGUSR2 to the master, which re-executes itself, starts new workers that take the
listening sockets over from the old ones (haproxy passes them with `-x sockpair@...` on its own
in master-worker mode) and lets the old workers finish their connections: no connection is
refused.

haproxy is checked and started with a second config file, {base_path}/haproxy-default-user-group
.conf (`global` / `group nogroup`), as Octavia's agent and unit do with
/var/lib/octavia/haproxy-default-user-group.conf: the workers run with that group, not root's.

A start or reload answers only once haproxy says it is ready again, as systemd's Type=notify
unit makes `systemctl start|reload` wait for Octavia's agent: haproxy runs with -Ws and its
master's READY=1 reaches the agent (haproxy_notify.py). Without that a reload answered when the
new worker appeared, while the master was still re-executing itself, and a next reload's
SIGUSR2 arriving then could leave haproxy with no new worker at all.

`haproxy -c` gets a third file, {base_path}/haproxy-check-only.conf (`global` /
`httpclient.ssl.verify none`), never given to a serving haproxy: without it every check spends
most of its time loading the whole system CA store for haproxy's internal HTTP client, which a
check never uses.

A serving haproxy gets a third file too, {base_path}/{lb_id}/haproxy-httpclient.conf, written
before every start and reload (the master re-executes itself with the same files): `global` /
`httpclient.ssl.verify none` when the load balancer's config leaves that HTTP client
unreachable (haproxy_config.httpclient_unreachable: no Lua, no httpclient settings, no admin
stats socket; Octavia's configs are such), else just `global`. Loading the CA store for a
client nothing can call was half of every reload (≈ 160 → 75 ms SIGUSR2 to READY=1 here); where
the client can be used, haproxy loads the store as before.

A reload checks the config again only when something the last successful check read has
changed since (haproxy_check_inputs.py): a push is an upload, checked, then a reload of exactly
that, and the second `haproxy -c` was 10-20 ms of every push. A certificate changed or deleted
in between, a config edited behind the agent, an agent restart: checked again, and refused as
before.

A haproxy that dies unexpectedly is started again by haproxy_restart.py, as systemd's
Restart=always does for Octavia's haproxy unit; this module keeps the start history that bounds
a crash loop (StartLimit below) and tells it, through change_hooks, when a start, reload or stop
may have changed a master. /listeners reports a dead haproxy as ERROR until then.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import grp
import hashlib
import logging
import os
import shutil
import signal
import socket
import stat
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from amphora_agent import netns
from amphora_agent.config import START_LIMIT_INTERVAL_S, AgentConfig
from amphora_agent.fsutil import atomic_write, write_text_if_changed
from amphora_agent.haproxy_check_inputs import CheckInputs, check_inputs
from amphora_agent.haproxy_config import (
    HaproxyConfig,
    httpclient_unreachable,
    parse_haproxy_config,
)
from amphora_agent.haproxy_notify import ReadyNotifier
from amphora_agent.names import is_uuid
from amphora_agent.processes import (
    POLL_S,
    is_alive,
    run_command,
    terminate_all,
    terminate_tree,
    wait_for,
)

LOG = logging.getLogger(__name__)

CHECK_TIMEOUT_S = 60.0
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0
RELOAD_TIMEOUT_S = 15.0
SOCKET_TIMEOUT_S = 5.0
_EXEC_WINDOW_POLLS = 20

# Octavia's image ships /var/lib/octavia/haproxy-default-user-group.conf with these lines (the
# group is nogroup on Debian and Ubuntu); ours writes it under base_path at start.
USER_GROUP_FILE = "haproxy-default-user-group.conf"
# Given to `haproxy -c` only, after the other files: the check skips loading the system CA
# store for haproxy's internal HTTP client (about six sevenths of a check's CPU). The serving
# haproxy never reads this file, so what it verifies is unchanged.
CHECK_ONLY_FILE = "haproxy-check-only.conf"
CHECK_ONLY_CONFIG = "global\n    httpclient.ssl.verify none\n"
# Given to a serving haproxy after the other files (see the module doc).
HTTPCLIENT_FILE = "haproxy-httpclient.conf"
HTTPCLIENT_UNREACHABLE_CONFIG = CHECK_ONLY_CONFIG
HTTPCLIENT_DEFAULT_CONFIG = "global\n"

# systemd's defaults for a unit that sets none (Octavia's haproxy unit sets none):
# DefaultStartLimitIntervalSec=10s (START_LIMIT_INTERVAL_S, in config.py: the agent's
# haproxy_start_limit_interval), DefaultStartLimitBurst=5. A unit started 5 times within 10 s is
# not started again: it stays failed until someone starts it.
START_LIMIT_BURST = 5

# Listener / load-balancer states as the Amphora API reports them.
ACTIVE = "ACTIVE"
STOPPED = "STOPPED"
ERROR = "ERROR"


class HaproxyError(Exception):
    """haproxy refused a config or an action; output is what it printed."""

    def __init__(self, output: str) -> None:
        super().__init__(output)
        self.output = output


def peer_name(amphora_id: str) -> str:
    """The local peer name haproxy gets with -L, derived from the amphora id as Octavia's
    driver does when it writes the `peers` section (haproxy limits peer name length)."""
    digest = hashlib.sha1(amphora_id.encode(), usedforsecurity=False).digest()
    name = base64.b64encode(digest, altchars=b"_-").decode().rstrip("=")
    # A leading '-' would read as an option (haproxy issue 644).
    return "x" + name[1:] if name.startswith("-") else name


def socket_command(path: Path, command: str, timeout: float = SOCKET_TIMEOUT_S) -> str:
    """Send one command to a haproxy stats socket and return the whole answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(command.encode() + b"\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def user_group_config(group: str = "nogroup") -> str:
    return f"global\n    group {group}\n"


def install_user_group_file(base_path: Path) -> Path:
    """Write {base_path}/haproxy-default-user-group.conf (unchanged if already right)."""
    return write_text_if_changed(base_path / USER_GROUP_FILE, user_group_config(_worker_group()),
                                 mode=0o644)


def _worker_group() -> str:
    """What Octavia's image writes: nogroup (Debian, Ubuntu, others), haproxy on Red Hat
    family systems (which have no nogroup)."""
    for name in ("nogroup", "haproxy"):
        try:
            grp.getgrnam(name)
        except KeyError:
            continue
        return name
    return "nogroup"


class StartLimit:
    """systemd's start rate limit, per load balancer: every start counts (requested or
    automatic); once START_LIMIT_BURST starts fell within START_LIMIT_INTERVAL_S, automatic
    restarts stop for good (the unit is "failed") until a requested start, stop or delete."""

    def __init__(self, burst: int = START_LIMIT_BURST,
                 interval: float = START_LIMIT_INTERVAL_S) -> None:
        self.burst = burst
        self.interval = interval
        self._starts: dict[str, deque[float]] = {}
        self._failed: set[str] = set()
        self._guard = threading.Lock()

    def record_start(self, lb_id: str) -> None:
        with self._guard:
            starts = self._starts.setdefault(lb_id, deque(maxlen=self.burst))
            starts.append(time.monotonic())

    def reset(self, lb_id: str) -> None:
        with self._guard:
            self._starts.pop(lb_id, None)
            self._failed.discard(lb_id)

    def failed(self, lb_id: str) -> bool:
        with self._guard:
            return lb_id in self._failed

    def allow_restart(self, lb_id: str) -> bool:
        """Whether one more automatic start is allowed; False marks the load balancer failed."""
        with self._guard:
            if lb_id in self._failed:
                return False
            starts = self._starts.get(lb_id, ())
            if len(starts) >= self.burst and time.monotonic() - starts[0] < self.interval:
                self._failed.add(lb_id)
                return False
            return True


def _announced(action: Callable[..., None]) -> Callable[..., None]:
    """A HaproxySupervisor action on one load balancer, followed by its change_hooks whatever
    its outcome."""
    @functools.wraps(action)
    def announced(self: HaproxySupervisor, lb_id: str, *args: Any, **kwargs: Any) -> None:
        try:
            action(self, lb_id, *args, **kwargs)
        finally:
            self._run_hooks(self.change_hooks, lb_id)
    return announced


class HaproxySupervisor:
    """Starts, stops, reloads and finds the haproxy of every load balancer.

    Callers serialize actions on one load balancer (the API holds context.lock(lb_id)); the
    read-only queries are safe from any thread.
    """

    def __init__(self, config: AgentConfig, notifier: ReadyNotifier | None = None) -> None:
        self._config = config
        # With a notifier haproxy runs with -Ws and starts and reloads wait for its READY=1;
        # without one (the path is unusable, or a read-only user such as the VRRP check) -W.
        self._notifier = notifier
        self._peer_name = peer_name(config.amphora_id)
        # Called with the lb id just before a reload or stop: the heartbeat accounts for the
        # running worker there and holds it, so deltas survive the worker being replaced.
        self.reload_hooks: list[Callable[[str], None]] = []
        # Called with the lb id after every start, reload and stop (a delete stops), whether it
        # succeeded or not: the master, or the controller's wish for it, may have changed
        # (haproxy_restart.py then watches the masters afresh). Must not block.
        self.change_hooks: list[Callable[[str], None]] = []
        self.start_limit = StartLimit(interval=config.haproxy_start_limit_interval)
        # What the last successful check of each load balancer's config read (upload or
        # reload): a reload skips its check while that is unchanged (haproxy_check_inputs).
        self._checked: dict[str, CheckInputs] = {}

    # --- layout -----------------------------------------------------------------------------

    def lb_dir(self, lb_id: str) -> Path:
        return self._config.base_path / lb_id

    def config_path(self, lb_id: str) -> Path:
        return self.lb_dir(lb_id) / "haproxy.cfg"

    def httpclient_path(self, lb_id: str) -> Path:
        return self.lb_dir(lb_id) / HTTPCLIENT_FILE

    def pid_path(self, lb_id: str) -> Path:
        return self.lb_dir(lb_id) / f"{lb_id}.pid"

    def cert_dir(self, lb_id: str) -> Path:
        return self._config.base_cert_dir / lb_id

    @property
    def user_group_path(self) -> Path:
        return self._config.base_path / USER_GROUP_FILE

    @property
    def check_only_path(self) -> Path:
        return self._config.base_path / CHECK_ONLY_FILE

    # --- queries ----------------------------------------------------------------------------

    def lb_ids(self) -> list[str]:
        """Every load balancer with an uploaded config, sorted."""
        base = self._config.base_path
        if not base.is_dir():
            return []
        return sorted(
            entry.name for entry in base.iterdir()
            if is_uuid(entry.name) and self.config_path(entry.name).is_file()
        )

    def exists(self, lb_id: str) -> bool:
        return is_uuid(lb_id) and self.config_path(lb_id).is_file()

    def parsed_config(self, lb_id: str) -> HaproxyConfig:
        """The load balancer's config as parsed by the naming convention (empty if none)."""
        try:
            return parse_haproxy_config(self.config_path(lb_id).read_text(errors="replace"))
        except OSError:
            return HaproxyConfig()

    def stats_socket(self, lb_id: str) -> Path | None:
        return self.parsed_config(lb_id).stats_socket

    def master_process(self, lb_id: str) -> psutil.Process | None:
        """The live master of this load balancer's haproxy, or None."""
        try:
            pid = int(self.pid_path(lb_id).read_text().split()[0])
            process = psutil.Process(pid)
            ours = str(self.config_path(lb_id)) in _command_line(process)
        except (OSError, ValueError, IndexError, psutil.Error):
            return None
        return process if ours and is_alive(process) else None

    def master_pid(self, lb_id: str) -> int | None:
        master = self.master_process(lb_id)
        return master.pid if master else None

    def worker_pids(self, lb_id: str) -> list[int]:
        """The master's live workers (old ones still draining connections included)."""
        master = self.master_process(lb_id)
        if master is None:
            return []
        try:
            children = master.children()
        except psutil.Error:
            return []
        return sorted(child.pid for child in children if is_alive(child))

    def is_running(self, lb_id: str) -> bool:
        return self.master_process(lb_id) is not None

    def _master_gone(self, lb_id: str) -> bool:
        """The pid file names a master that no longer lives (False while none is written)."""
        try:
            pid = int(self.pid_path(lb_id).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return False
        try:
            return not is_alive(psutil.Process(pid))
        except psutil.NoSuchProcess:
            return True

    def status(self, lb_id: str) -> str:
        """ACTIVE when running, ERROR when it died (its pid file is left) or could not be
        started again (start limit hit), STOPPED otherwise."""
        if self.is_running(lb_id):
            return ACTIVE
        failed = self.pid_path(lb_id).exists() or self.start_limit.failed(lb_id)
        return ERROR if failed else STOPPED

    # --- actions ----------------------------------------------------------------------------

    def check(self, config_file: Path) -> None:
        """Run haproxy's own config check, raising HaproxyError with its output."""
        argv = [self._config.haproxy_cmd, "-c", "-L", self._peer_name, "-f", str(config_file),
                "-f", str(self.user_group_path), "-f", str(self._check_only_file())]
        result = run_command(argv, CHECK_TIMEOUT_S, HaproxyError, new_session=True)
        if result.returncode != 0:
            raise HaproxyError(result.stdout)

    def install_config(self, lb_id: str, data: bytes) -> None:
        """Replace the load balancer's config with data, only if haproxy accepts it.

        A rejected config raises HaproxyError and leaves every file as it was: the running
        haproxy keeps serving the previous config.
        """
        lb_dir = self.lb_dir(lb_id)
        created = not lb_dir.exists()
        self._checked.pop(lb_id, None)
        # Taken before the check: whatever changes while it runs shows as a difference later.
        inputs = self._check_inputs(lb_id, data)
        try:
            atomic_write(self.config_path(lb_id), data, validate=self.check, durable=False)
        except HaproxyError:
            if created:
                with contextlib.suppress(OSError):
                    lb_dir.rmdir()
            raise
        if inputs is not None:
            self._checked[lb_id] = inputs

    @_announced
    def start(self, lb_id: str, *, automatic: bool = False) -> None:
        """Start haproxy for a load balancer (nothing to do if it runs).

        automatic: a restart after an unexpected exit (haproxy_restart.py); any other start is
        requested and clears the start limit, as `systemctl start` of a failed unit does."""
        if self.is_running(lb_id):
            return
        if not automatic:
            self.start_limit.reset(lb_id)
        self.start_limit.record_start(lb_id)
        config_file = self.config_path(lb_id)
        self.check(config_file)
        pid_file = self.pid_path(lb_id)
        # What a dead master left (workers finishing on their own), as systemd kills what is
        # left in a unit's cgroup before starting it again.
        self._kill_leftovers(pid_file)
        pid_file.unlink(missing_ok=True)
        notifier = self._notifier
        argv = netns.in_namespace(
            self._config.network_namespace,
            [self._config.haproxy_cmd, "-Ws" if notifier else "-W", "-D", "-p", str(pid_file),
             "-L", self._peer_name, "-f", str(config_file), "-f", str(self.user_group_path),
             "-f", str(self._httpclient_file(lb_id))],
        )
        mark = notifier.mark() if notifier else 0
        result = run_command(argv, START_TIMEOUT_S, HaproxyError, new_session=True,
                             env=notifier.environment() if notifier else None)
        if result.returncode != 0:
            raise HaproxyError(result.stdout)
        # A master that dies before it is up fails the start at once (as a Type=notify unit's
        # main process dying does), instead of being waited for until START_TIMEOUT_S.
        if not wait_for(lambda: self.is_running(lb_id) or self._master_gone(lb_id),
                        START_TIMEOUT_S) or not self.is_running(lb_id):
            raise HaproxyError(f"haproxy for {lb_id} did not come up\n{result.stdout}")
        master = self.master_process(lb_id)
        if notifier and master is not None:
            self._wait_ready(lb_id, master, mark, START_TIMEOUT_S, "start")
        LOG.info("haproxy for %s started, master pid %s", lb_id, self.master_pid(lb_id))

    @_announced
    def reload(self, lb_id: str) -> None:
        """Seamlessly reload a running haproxy on its current config."""
        master = self.master_process(lb_id)
        if master is None:
            raise HaproxyError(f"haproxy for {lb_id} is not running")
        # Certificates may have changed since the upload was checked.
        self._check_unless_checked(lb_id)
        self._run_hooks(self.reload_hooks, lb_id)
        self._save_server_state(lb_id)
        before = set(self.worker_pids(lb_id))
        # A master started by an agent without a notifier (-W) never says READY=1.
        try:
            notifier = self._notifier if "-Ws" in _command_line(master) else None
        except psutil.Error as exc:
            raise HaproxyError(f"haproxy master {master.pid} exited before the reload") from exc
        # Masters started by an earlier agent read no such file.
        with contextlib.suppress(psutil.Error):
            if str(self.httpclient_path(lb_id)) in _command_line(master):
                self._httpclient_file(lb_id)
        mark = notifier.mark() if notifier else 0
        master.send_signal(signal.SIGUSR2)

        def new_worker_up() -> bool:
            _check_alive(master, "reload")
            return bool(set(self.worker_pids(lb_id)) - before)

        if notifier is not None:
            self._wait_ready(lb_id, master, mark, RELOAD_TIMEOUT_S, "reload")
            # haproxy says READY=1 also after a reload whose new worker failed (the old ones
            # keep serving): that is no reload.
            if not new_worker_up():
                raise HaproxyError(f"haproxy for {lb_id} started no new worker after a reload")
        elif not wait_for(new_worker_up, RELOAD_TIMEOUT_S):
            raise HaproxyError(f"haproxy for {lb_id} started no new worker after a reload")

    @_announced
    def stop(self, lb_id: str) -> None:
        """Stop haproxy (hard stop, as systemd's stop does) and forget its pid file."""
        self.start_limit.reset(lb_id)
        master = self.master_process(lb_id)
        if master is not None:
            self._run_hooks(self.reload_hooks, lb_id)
            survivors = terminate_tree(master, STOP_TIMEOUT_S)
            if survivors:
                raise HaproxyError(f"haproxy processes {survivors} did not exit")
            _reap(master.pid)
            LOG.info("haproxy for %s stopped", lb_id)
        self.pid_path(lb_id).unlink(missing_ok=True)

    def delete(self, lb_id: str) -> None:
        """Stop haproxy and remove everything the load balancer had on disk."""
        stats_socket = self.stats_socket(lb_id)
        self.stop(lb_id)
        # The socket path comes from the uploaded config: remove it only if it is a socket.
        if stats_socket is not None:
            with contextlib.suppress(OSError):
                if stat.S_ISSOCK(stats_socket.lstat().st_mode):
                    stats_socket.unlink()
        shutil.rmtree(self.cert_dir(lb_id), ignore_errors=True)
        shutil.rmtree(self.lb_dir(lb_id), ignore_errors=True)
        self._checked.pop(lb_id, None)

    def running_summary(self) -> dict[str, int | None]:
        """Master pid (None when not running) of every load balancer; logged at agent start."""
        return {lb_id: self.master_pid(lb_id) for lb_id in self.lb_ids()}

    # --- internals --------------------------------------------------------------------------

    def _check_inputs(self, lb_id: str, config: bytes) -> CheckInputs | None:
        state_file = parse_haproxy_config(config.decode(errors="replace")).server_state_file
        return check_inputs(config, self.cert_dir(lb_id), state_file,
                            (self.user_group_path, Path(self._config.haproxy_cmd)))

    def _check_unless_checked(self, lb_id: str) -> None:
        """haproxy -c of the load balancer's config, unless the last successful check read
        exactly what this one would (haproxy_check_inputs): that check's answer stands."""
        config_file = self.config_path(lb_id)
        try:
            inputs = self._check_inputs(lb_id, config_file.read_bytes())
        except OSError:
            inputs = None  # the check says what is wrong
        if inputs is not None and self._checked.get(lb_id) == inputs:
            return
        self._checked.pop(lb_id, None)
        self.check(config_file)
        if inputs is not None:
            self._checked[lb_id] = inputs

    def _check_only_file(self) -> Path:
        return write_text_if_changed(self.check_only_path, CHECK_ONLY_CONFIG, mode=0o644)

    def _httpclient_file(self, lb_id: str) -> Path:
        """The serving haproxy's httpclient file, matching the load balancer's current config
        (module doc)."""
        text = self.config_path(lb_id).read_text(errors="replace")
        wanted = (HTTPCLIENT_UNREACHABLE_CONFIG if httpclient_unreachable(text)
                  else HTTPCLIENT_DEFAULT_CONFIG)
        return write_text_if_changed(self.httpclient_path(lb_id), wanted, mode=0o644,
                                     durable=False)

    def _wait_ready(self, lb_id: str, master: psutil.Process, mark: int, timeout: float,
                    action: str) -> None:
        """Wait (bounded) for the master's READY=1 after mark, as systemd waits for it before
        a Type=notify unit's start or reload job completes."""
        assert self._notifier is not None
        if not self._notifier.wait_ready(master.pid, mark, timeout,
                                         lambda: _check_alive(master, action)):
            raise HaproxyError(
                f"haproxy for {lb_id} (master pid {master.pid}) did not report ready (READY=1) "
                f"within {timeout:.0f} s of the {action}")

    def _kill_leftovers(self, pid_file: Path) -> None:
        """Kill the processes of an earlier start of this load balancer that outlived their
        master (only a start names the pid file on its command line)."""
        leftovers = []
        for process in psutil.process_iter(["cmdline"]):
            with contextlib.suppress(psutil.Error):
                if str(pid_file) in (process.info["cmdline"] or []) and is_alive(process):
                    leftovers.append(process)
        if leftovers:
            LOG.warning("killing what an earlier haproxy left: %s", [p.pid for p in leftovers])
            terminate_all(leftovers, STOP_TIMEOUT_S)

    @staticmethod
    def _run_hooks(hooks: list[Callable[[str], None]], lb_id: str) -> None:
        for hook in hooks:
            try:
                hook(lb_id)
            except Exception:  # a hook must never block a start, reload or stop
                LOG.exception("hook %r failed for %s", hook, lb_id)

    def _save_server_state(self, lb_id: str) -> None:
        """Keep member health and weights across the reload (haproxy's server-state-file),
        when the config asks for it and the file is inside the agent's base path."""
        parsed = self.parsed_config(lb_id)
        state_file = parsed.server_state_file
        if state_file is None or parsed.stats_socket is None:
            return
        if not state_file.resolve().is_relative_to(self._config.base_path.resolve()):
            LOG.warning("not saving server state of %s outside %s", lb_id,
                        self._config.base_path)
            return
        try:
            state = socket_command(parsed.stats_socket, "show servers state")
            atomic_write(state_file, state.encode(), mode=0o644, durable=False)
        except OSError as exc:
            LOG.warning("could not save the server state of %s: %s", lb_id, exc)


def _check_alive(master: psutil.Process, action: str) -> None:
    if not is_alive(master):
        raise HaproxyError(f"haproxy master {master.pid} exited during the {action}")


def _command_line(process: psutil.Process) -> list[str]:
    """The process's argv. While the master re-executes itself on a reload, /proc shows an
    empty command line for a moment; wait that out (bounded) rather than report it dead."""
    for _ in range(_EXEC_WINDOW_POLLS):
        cmdline = process.cmdline()
        if cmdline:
            return cmdline
        time.sleep(POLL_S / 4)
    return []


def _reap(pid: int) -> None:
    """Collect the exit status if the master happens to be our child (agent running as an
    init process); otherwise there is nothing to do."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
