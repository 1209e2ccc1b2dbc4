"""A second Docker Engine in a network namespace of its own: a stand-in for a remote machine.

The engine's dockerd (and the containerd it starts) share the host's file systems, cgroups and
mount namespace but have their own network namespace, so the host reaches it only through its
API socket (a unix socket on the host's file system), as it would reach an engine elsewhere:
its containers' addresses are not routed from the host, and the netns has no link to it.

dockerd is started through `nsenter --net=` and not `ip netns exec`: the latter remounts /sys
for the new namespace, which hides the cgroup (v1) mounts dockerd needs. Inside the netns it
runs its own docker0 (BRIDGE_IP) and iptables rules; its networks come from ADDRESS_POOLS, away
from the host engine's default pools and from the lab address space (the harness gives its lab
networks explicit subnets there).

Everything an engine named NAME owns is named after it, so that stop() finds it all again in a
later process (`amphora-harness engine down NAME`): the netns ENGINE_NETNS_PREFIX+NAME, the data
directory ENGINES_DIR/NAME (config, dockerd's log, the data root) and the run directory
RUN_DIR_PREFIX+NAME (socket, pid file, exec root; short, since a unix socket's path is limited to
107 bytes and containerd puts its sockets under the exec root).
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import time
from contextlib import closing, suppress
from dataclasses import dataclass
from ipaddress import IPv4Interface, IPv4Network
from pathlib import Path
from types import TracebackType

import docker
import docker.errors
import psutil
import requests.exceptions

ENGINES_DIR = Path("/var/lib/amphora-harness/engines")
RUN_DIR_PREFIX = "/run/ah-"
ENGINE_NETNS_PREFIX = "ah-engine-"
NETNS_DIR = Path("/run/netns")
CGROUP_ROOT = Path("/sys/fs/cgroup")
# The engine's own docker0 and the pools its networks are taken from (10.213/16 and 10.214/16:
# neither the host engine's defaults, 172.17/16 and up and 192.168/16, nor the lab address space
# 198.18/15). Every netns engine uses the same ones: they never meet.
BRIDGE_IP = IPv4Interface("10.213.0.1/24")
ADDRESS_POOLS = (IPv4Network("10.214.0.0/16"),)
POOL_SUBNET_PREFIX = 24
STORAGE_DRIVER = "fuse-overlayfs"
# Short, so the run directory's sockets stay well under the unix socket path limit.
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,19}")
LOG_TAIL_LINES = 20


class EngineError(RuntimeError):
    """The engine could not be started or stopped; the message says why (with dockerd's log)."""


@dataclass(frozen=True)
class EnginePaths:
    """Where the engine named `name` keeps everything (all derived from the name)."""

    name: str

    def __post_init__(self) -> None:
        if not NAME_PATTERN.fullmatch(self.name):
            raise EngineError(f"engine name {self.name!r}: use 1-20 of a-z, 0-9 and '-' "
                              "(starting with a letter or digit)")

    @property
    def netns(self) -> str:
        return f"{ENGINE_NETNS_PREFIX}{self.name}"

    @property
    def netns_path(self) -> Path:
        return NETNS_DIR / self.netns

    @property
    def data_dir(self) -> Path:
        return ENGINES_DIR / self.name

    @property
    def config_file(self) -> Path:
        return self.data_dir / "daemon.json"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "dockerd.log"

    @property
    def data_root(self) -> Path:
        return self.data_dir / "data"

    @property
    def run_dir(self) -> Path:
        return Path(f"{RUN_DIR_PREFIX}{self.name}")

    @property
    def exec_root(self) -> Path:
        return self.run_dir / "exec"

    @property
    def socket(self) -> Path:
        return self.run_dir / "docker.sock"

    @property
    def pidfile(self) -> Path:
        return self.run_dir / "dockerd.pid"

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def cgroup_parent(self) -> str:
        """Where its containers' cgroups go (absolute: not under dockerd's own cgroup), instead
        of /docker beside the host engine's: stop() finds a killed engine's orphaned container
        processes there."""
        return f"/{self.netns}"

    def cgroup_dirs(self) -> list[Path]:
        """The cgroup_parent directories that exist, one per mounted hierarchy (cgroup v1:
        one per controller; v2: the one)."""
        name = self.cgroup_parent.lstrip("/")
        return [path for path in [CGROUP_ROOT / name, *CGROUP_ROOT.glob(f"*/{name}")]
                if path.is_dir()]

    def dockerd_argv(self) -> list[str]:
        # Its own containerd namespaces too, so nothing of it is mistaken for the host
        # engine's in containerd tooling.
        return [
            "nsenter", f"--net={self.netns_path}", "dockerd",
            "--config-file", str(self.config_file),
            "--host", self.url,
            "--data-root", str(self.data_root),
            "--exec-root", str(self.exec_root),
            "--pidfile", str(self.pidfile),
            "--containerd-namespace", f"ah-{self.name}",
            "--containerd-plugins-namespace", f"ah-{self.name}-plugins",
        ]


def daemon_config(paths: EnginePaths) -> dict[str, object]:
    """dockerd's config file. Only what differs from the defaults or must not collide."""
    return {
        "storage-driver": STORAGE_DRIVER,
        "bip": str(BRIDGE_IP),
        "default-address-pools": [{"base": str(pool), "size": POOL_SUBNET_PREFIX}
                                  for pool in ADDRESS_POOLS],
        "cgroup-parent": paths.cgroup_parent,
        "log-driver": "json-file",
        "log-opts": {"max-size": "10m", "max-file": "3"},
    }


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def _mount_points() -> list[Path]:
    """The host's mount points (this mount namespace's), from /proc/self/mountinfo."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        # Field 5 is the mount point, with spaces and the like octal-escaped.
        raw = line.split()[4]
        points.append(Path(raw.encode().decode("unicode_escape")))
    return points


class NetnsEngine:
    """A dockerd in its own network namespace. start() returns its unix:// URL once it answers;
    stop() removes its containers, stops it and removes everything it had (idempotent, and safe
    on a half-started engine). As a context manager: started on entry, stopped on exit."""

    def __init__(self, name: str) -> None:
        self.paths = EnginePaths(name)
        # Set when this process started dockerd, so stop() reaps it; `engine down` in another
        # process finds it by its command line instead.
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def name(self) -> str:
        return self.paths.name

    @property
    def url(self) -> str:
        return self.paths.url

    def __enter__(self) -> NetnsEngine:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- start ---------------------------------------------------------------------------------

    def start(self, timeout_s: float = 60.0) -> str:
        """Start dockerd (detached: it outlives this process) and return its URL once it
        answers a ping. Leftovers of an earlier engine of this name that is not running are
        removed first; a running one is an error. On any failure everything is removed again."""
        if self._processes():
            raise EngineError(f"engine {self.name} is already running at {self.url} "
                              f"(`amphora-harness engine down {self.name}` stops it)")
        self.stop()
        try:
            self._make_netns()
            for directory in (self.paths.data_dir, self.paths.run_dir):
                directory.mkdir(parents=True, exist_ok=True)
            config = json.dumps(daemon_config(self.paths), indent=2)
            self.paths.config_file.write_text(config + "\n")
            with self.paths.log_file.open("ab") as log:
                self._process = subprocess.Popen(
                    self.paths.dockerd_argv(), stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, start_new_session=True)
            self._wait_ready(self._process, timeout_s)
        except BaseException:
            self.stop()
            raise
        return self.url

    def _make_netns(self) -> None:
        for argv in (["ip", "netns", "add", self.paths.netns],
                     ["ip", "-n", self.paths.netns, "link", "set", "lo", "up"]):
            result = _run(argv)
            if result.returncode != 0:
                raise EngineError(f"{' '.join(argv)}: {result.stderr.strip()}")

    def _wait_ready(self, process: subprocess.Popen[bytes], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise EngineError(f"dockerd of engine {self.name} exited with "
                                  f"{process.returncode} while starting; the end of its log "
                                  f"(removed with the engine):\n{self.log_tail()}")
            if self.paths.socket.exists():
                try:
                    with closing(self.client(timeout_s=5)) as client:
                        client.ping()
                    return
                except (docker.errors.DockerException, requests.exceptions.RequestException) \
                        as exc:
                    last_error = str(exc)
            time.sleep(0.2)
        raise EngineError(f"dockerd of engine {self.name} did not answer at {self.url} within "
                          f"{timeout_s:.0f}s ({last_error}); the end of its log (removed with "
                          f"the engine):\n{self.log_tail()}")

    def client(self, timeout_s: float = 60) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.url, timeout=int(timeout_s))

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.paths.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def is_running(self) -> bool:
        return bool(self._processes())

    # -- stop ----------------------------------------------------------------------------------

    def stop(self, timeout_s: float = 30.0) -> None:
        """Remove the engine's containers through its API, stop dockerd (SIGTERM, then SIGKILL
        after timeout_s) and whatever of it is left (containerd, shims), unmount what it left
        mounted, delete the netns and the data and run directories. Does nothing that is not
        needed: safe on a stopped or half-started engine."""
        if self.paths.socket.exists() and self._dockerd():
            self._remove_containers()
        dockerd = self._dockerd()
        if dockerd is not None:
            self._terminate([dockerd], timeout_s)
        # containerd exits with dockerd, shims and container processes with their containers;
        # after a SIGKILL of dockerd they may not have.
        self._kill_containers_left()
        self._terminate(self._processes(), timeout_s=5)
        self._remove_cgroups()
        if self._process is not None:
            self._process.poll()  # already reaped by the wait above: marks it finished
            self._process = None
        self._unmount_under(self.paths.data_dir, self.paths.run_dir)
        if self.paths.netns_path.exists():
            result = _run(["ip", "netns", "delete", self.paths.netns])
            if result.returncode != 0:
                raise EngineError(f"ip netns delete {self.paths.netns}: "
                                  f"{result.stderr.strip()}")
        for directory in (self.paths.run_dir, self.paths.data_dir):
            shutil.rmtree(directory, ignore_errors=True)
            if directory.exists():
                raise EngineError(f"could not remove {directory} (something still uses it)")

    def _remove_containers(self) -> None:
        try:
            with closing(self.client()) as client:
                for container in client.containers.list(all=True):
                    container.remove(force=True, v=True)
        except (docker.errors.DockerException, requests.exceptions.RequestException):
            pass  # an engine that does not answer is stopped by signal; its containers die too

    def _cgroup_processes(self) -> list[psutil.Process]:
        pids: set[int] = set()
        for directory in self.paths.cgroup_dirs():
            for procs in directory.rglob("cgroup.procs"):
                with suppress(OSError):
                    pids.update(int(pid) for pid in procs.read_text().split())
        processes = []
        for pid in pids:
            with suppress(psutil.NoSuchProcess):
                processes.append(psutil.Process(pid))
        return processes

    def _kill_containers_left(self) -> None:
        """SIGKILL what still runs in the engine's containers' cgroups (a killed dockerd's
        containers: their shim may be gone, and they outlive it)."""
        processes = self._cgroup_processes()
        for process in processes:
            with suppress(psutil.NoSuchProcess):
                process.kill()
        psutil.wait_procs(processes, timeout=5)

    def _remove_cgroups(self) -> None:
        for directory in self.paths.cgroup_dirs():
            # Children first: a cgroup with sub-cgroups cannot be removed.
            for child in sorted((p for p in directory.rglob("*") if p.is_dir()),
                                key=lambda p: len(p.parts), reverse=True):
                with suppress(OSError):
                    child.rmdir()
            with suppress(OSError):
                directory.rmdir()

    def _dockerd(self) -> psutil.Process | None:
        """The engine's dockerd among its processes (started as `nsenter ... dockerd`, which
        execs dockerd in place)."""
        for process in self._processes():
            try:
                if process.cmdline()[:1] == ["dockerd"] or process.name() == "dockerd":
                    return process
            except psutil.Error:
                continue
        return None

    def _processes(self) -> list[psutil.Process]:
        """Processes that belong to this engine: their command line names its run directory
        (dockerd: its socket and exec root; containerd: its config there; shims: its
        containerd socket). Found by that unique path, never by program name."""
        marker = str(self.paths.run_dir) + "/"
        found = []
        for process in psutil.process_iter(["cmdline"]):
            cmdline = process.info["cmdline"] or []
            if any(marker in argument for argument in cmdline):
                found.append(process)
        return found

    @staticmethod
    def _terminate(processes: list[psutil.Process], timeout_s: float) -> None:
        for process in processes:
            with suppress(psutil.NoSuchProcess):
                process.send_signal(signal.SIGTERM)
        _, alive = psutil.wait_procs(processes, timeout=timeout_s)
        for process in alive:
            with suppress(psutil.NoSuchProcess):
                process.kill()
        psutil.wait_procs(alive, timeout=5)

    @staticmethod
    def _unmount_under(*directories: Path) -> None:
        """Unmount what a killed engine left mounted (fuse-overlayfs layers, netns handles),
        the deepest first. Lazily: a mount still busy goes once its last user does."""
        points = [point for point in _mount_points()
                  if any(point == d or d in point.parents for d in directories)]
        for point in sorted(points, key=lambda p: len(p.parts), reverse=True):
            _run(["umount", "-l", str(point)])

