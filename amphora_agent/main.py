"""amphora-agent --config-file FILE: serve the Amphora API."""

from __future__ import annotations

import argparse
import logging
import signal
import subprocess
import sys
import threading
from pathlib import Path

from amphora_agent import details, netns
from amphora_agent.app import create_app
from amphora_agent.config import AgentConfig, ConfigError, load_config
from amphora_agent.desired_state import DESIRED_STATE_FILE, DesiredState
from amphora_agent.fsutil import remove_stale_temp_files, remove_stale_temp_files_of
from amphora_agent.haproxy import HaproxySupervisor, install_user_group_file
from amphora_agent.haproxy_notify import ReadyNotifier
from amphora_agent.haproxy_restart import HaproxyRestarter
from amphora_agent.heartbeat import start_heartbeat
from amphora_agent.keepalived import KeepalivedSupervisor
from amphora_agent.ping_wrapper import install_ping_wrapper
from amphora_agent.plug import Plugger
from amphora_agent.restore import restore_data_plane
from amphora_agent.server import AgentServer, ServerTls, make_tls_context
from amphora_agent.services import AgentServices
from amphora_agent.vip_firewall import VipFirewall

LOG = logging.getLogger("amphora_agent")


def build_arg_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="amphora-agent", description=__doc__)
    parser.add_argument("--config-file", required=True, type=Path,
                        help="INI file with Octavia's [amphora_agent], [haproxy_amphora], "
                        "[health_manager] and [controller_worker] sections")
    parser.add_argument("--log-level", default="INFO")
    return parser


def prepare_host(config: AgentConfig) -> None:
    """What must be in place before the first request: the data-plane namespace, the PING
    monitors' check script, haproxy's user-group file, and no temp files a crash may have left
    half written (wherever the agent writes: its state directories, and beside its server
    certificate and config file; the one of the server certificate holds a copy of its private
    key)."""
    netns.ensure_namespace(config.network_namespace)
    for directory in (config.base_path, config.base_cert_dir):
        remove_stale_temp_files(directory)
    for written in (config.agent_server_cert, config.source_file):
        if written is not None:
            remove_stale_temp_files_of(written)
    install_ping_wrapper(config.base_path)
    install_user_group_file(config.base_path)


def adopt_haproxy(config: AgentConfig, notifier: ReadyNotifier | None = None
                  ) -> HaproxySupervisor:
    """The haproxy supervisor. haproxy processes outlive the agent and are found again through
    their pid files; what is not running is left to restore_data_plane. notifier receives
    haproxy's READY=1 (starts and reloads wait for it)."""
    supervisor = HaproxySupervisor(config, notifier)
    for lb_id, pid in supervisor.running_summary().items():
        if pid is None:
            LOG.info("load balancer %s: haproxy not running (%s)", lb_id,
                     supervisor.status(lb_id))
        else:
            LOG.info("load balancer %s: haproxy running, master pid %s", lb_id, pid)
    return supervisor


def main(argv: list[str] | None = None) -> int:
    args = build_arg_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        config = load_config(args.config_file)
        tls = make_tls_context(config.agent_server_cert, config.agent_server_ca)
    except (ConfigError, OSError) as exc:
        print(f"amphora-agent: {exc}", file=sys.stderr)
        return 2

    # The package versions /info reports are asked of dpkg once (three dpkg-query runs, cached):
    # asked now, they are known by the time the agent answers, so its first /info (a
    # controller's readiness probe) does not wait for them.
    threading.Thread(target=details.info, args=(config,), name="versions", daemon=True).start()
    try:
        prepare_host(config)
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"amphora-agent: cannot prepare the host: {exc}", file=sys.stderr)
        return 2
    notifier = ReadyNotifier.for_base_path(config.base_path)
    haproxy = adopt_haproxy(config, notifier)
    # keepalived, like haproxy, outlives the agent and is found again through its pid file.
    keepalived = KeepalivedSupervisor(config)
    desired = DesiredState(config.base_path / DESIRED_STATE_FILE)
    plugger = Plugger.for_config(config)
    firewall = VipFirewall(config)
    # After a reboot of the amphora nothing of the data plane is left: bring back what the
    # controller last asked for (after an agent-only restart everything runs and this is a no-op).
    restore_data_plane(plugger, desired, haproxy, keepalived, firewall)
    agent = AgentServices(
        config=config, haproxy=haproxy, keepalived=keepalived, desired=desired, plugger=plugger,
        firewall=firewall, heartbeat=start_heartbeat(config, haproxy, keepalived),
        server_tls=ServerTls(tls),
    )
    try:
        server = AgentServer(config.bind_host, config.bind_port, create_app(agent),
                             agent.server_tls, config.agent_request_read_timeout)
    except OSError as exc:
        print(f"amphora-agent: cannot listen on {config.bind_host}:{config.bind_port}: {exc}",
              file=sys.stderr)
        return 2
    # From now on a haproxy that dies is started again (systemd's Restart=always).
    restarter = HaproxyRestarter(haproxy, desired, agent.lb_locks.hold)
    restarter.start()

    def stop(signum, _frame) -> None:
        LOG.info("signal %s: shutting down (haproxy and keepalived keep running)", signum)
        # Whatever stops haproxy after this (amphora-init's shutdown) is not a crash.
        restarter.stop()
        # shutdown() waits for serve_forever to return, so it must not run on its thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    LOG.info("amphora %s listening on %s:%s", config.amphora_id, config.bind_host,
             config.bind_port)
    server.serve_forever()
    server.server_close()
    if notifier is not None:
        notifier.close()
    return 0
