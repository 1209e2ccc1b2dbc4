"""Standing labs: `amphora-harness up`, `status`, `shell`, `logs`, `down`, and `gc` for what
runs that are gone left behind."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

from harness.cli.arguments import (
    add_agent_options,
    add_command,
    amphora_image_of,
    chosen_lab,
    lab_option,
    non_negative_int,
    octavia_source_of,
    provider_of,
)
from harness.cli.console import CONSOLE, OUT, CommandError, step
from harness.cli.lab_status import lab_status, status_lines, status_table
from harness.cli.push import push_and_wait
from harness.lab.cleanup import collect_leftovers, remove_workdirs
from harness.lab.constants import DATA_PLANE_NAMESPACE
from harness.lab.host_tables import remove_lab_tables
from harness.lab.images import ImageBuilder
from harness.lab.lab import Lab
from harness.lab.providers import make_provider
from harness.lab.providers.docker import DockerProvider
from harness.lab.shape import DEFAULT_TOPOLOGY, load_topology, with_overrides
from harness.lab.standing import StandingLab
from harness.lab.standing_state import (
    choose_lab,
    load_record,
    record_lab,
    recorded_lab_ids,
    recorded_provider,
    state_root,
)


def up(args: argparse.Namespace) -> None:
    topology = with_overrides(
        load_topology(args.topology), topology=args.arrangement, amphorae=args.amphorae,
        members=args.members, load_balancer=args.lb, no_load_balancer=args.no_lb)
    provider = provider_of(args)
    with step(f"image amphora ({args.agent} agent)"):
        amphora_image = amphora_image_of(provider, args)
    with step("image member"):
        member_image = provider.ensure_image("member")
    lab = Lab(provider, amphora_image=amphora_image, member_image=member_image, keep=True,
              agent=args.agent, octavia_source=octavia_source_of(args))
    try:
        with step(f"lab networks ({provider.name})"):
            lab.up()
        with step(f"{topology.amphorae} amphora(e), {topology.topology.value}"):
            amphorae = lab.add_amphorae(topology.amphorae, topology=topology.topology.value)
        with step(f"{topology.members} member(s)"):
            lab.add_members(topology.members)
        with step("ports: member network plugged, VIP port attached"):
            vip = lab.allocate_vip()
            for amphora in amphorae[: topology.lb_amphorae]:
                lab.plug_member_network(amphora)
                lab.attach_port(amphora, "vip")
        record = record_lab(lab, provider_name=provider.name,
                            topology=topology.topology.value,
                            lb_amphorae=topology.lb_amphorae, vip=vip)
        if topology.load_balancer is not None:
            with StandingLab(record, provider) as standing:
                push_and_wait(standing, topology.load_balancer)
    except BaseException:
        lab.keep = False  # a half-built lab is removed, state and all
        lab.down()
        forget_lab(lab.id)
        raise
    lab.down()  # keep=True: the clients close, everything stays up
    # The state dir keeps what later commands need (CA, driver certificate); the amphorae have
    # their keys: no private key of the lab stays in /tmp.
    remove_workdirs(lab.id)
    OUT.print(f"lab [bold]{lab.id}[/] is up ({topology.name}: {topology.description or ''})")
    _print_status(lab_status(record, provider))


def forget_lab(lab_id: str) -> None:
    """Remove a lab's host-side leftovers: link-fault tables, its state record and its work
    directories (a --keep-lab lab's PKI)."""
    remove_lab_tables(lab_id)
    remove_workdirs(lab_id)
    shutil.rmtree(state_root() / lab_id, ignore_errors=True)


def status(args: argparse.Namespace) -> None:
    """Every lab up (or the one --lab names): a table, or JSON with --json; exits non-zero
    when a node or an agent is unhealthy."""
    lab_ids = recorded_lab_ids() if args.lab is None and len(recorded_lab_ids()) > 1 \
        else [choose_lab(args.lab).lab_id]
    statuses = []
    for lab_id in lab_ids:
        record = load_record(lab_id)
        statuses.append(lab_status(record, make_provider(record.provider)))
    if args.json:
        print(json.dumps(statuses if len(statuses) > 1 else statuses[0], indent=1))
    else:
        for item in statuses:
            _print_status(item)
    unhealthy = [f"lab {s['lab']}: {'; '.join(s['problems'])}" for s in statuses
                 if not s["healthy"]]
    if unhealthy:
        raise CommandError(" | ".join(unhealthy))


def _print_status(status: dict) -> None:
    OUT.print(status_table(status))
    for line in status_lines(status):
        OUT.print(line)


def shell(args: argparse.Namespace) -> None:
    inner = ["ip", "netns", "exec", DATA_PLANE_NAMESPACE, "bash"] if args.data_plane \
        else ["bash"]
    with chosen_lab(args) as lab:
        argv = lab.provider.interactive_argv(_node(lab, args.node), inner)
    if shutil.which(argv[0]) is None:
        raise CommandError(f"shell needs the {argv[0]} command on this host")
    sys.stdout.flush()
    os.execvp(argv[0], argv)


def logs(args: argparse.Namespace) -> None:
    with chosen_lab(args) as lab:
        text = lab.provider.logs(_node(lab, args.node))
    lines = text.splitlines()
    print("\n".join(lines[-args.tail:] if args.tail else lines))


def _node(lab: StandingLab, name: str):
    """An amphora (index, name, id prefix) or a member (m1, m2, ...)."""
    if name.startswith("m") and name[1:].isdigit():
        number = int(name[1:])
        if not 1 <= number <= len(lab.members):
            raise CommandError(f"the lab has members m1..m{len(lab.members)}")
        return lab.members[number - 1].node
    return lab.amphora(name).node


def down(args: argparse.Namespace) -> None:
    if args.all:
        lab_ids = recorded_lab_ids()
    elif args.lab:
        lab_ids = [args.lab]  # also a lab `up` did not record (pytest --keep-lab)
    else:
        lab_ids = [choose_lab(None).lab_id]
    recorded = set(recorded_lab_ids())
    for lab_id in lab_ids:
        # A lab `up` recorded says where it runs (also a record of an older schema, which
        # nothing else reads); any other is looked for with --provider.
        named = recorded_provider(lab_id) if lab_id in recorded else None
        provider = make_provider(named) if named else provider_of(args)
        if lab_id not in recorded and lab_id not in {lab.lab_id for lab in provider.labs()}:
            raise CommandError(f"no lab {lab_id} (`amphora-harness status` lists them)")
        with step(f"lab {lab_id} down"):
            provider.teardown(lab_id)
            forget_lab(lab_id)
    if not lab_ids:
        OUT.print("no lab is up")


def gc(args: argparse.Namespace) -> None:
    provider = provider_of(args)
    if args.images and not isinstance(provider, DockerProvider):
        raise CommandError(f"--images removes container images; the {provider.name} provider "
                           "has none (use --provider docker)")
    # Labs of `up` carry the keep label: only --all removes them (`down` is the usual way).
    removed = collect_leftovers(provider, include_kept=args.all, everything=args.all)
    for lab_id in removed:
        forget_lab(lab_id)
        print(f"removed lab {lab_id}")
    existing = {lab.lab_id for lab in provider.labs()}
    for lab_id in recorded_lab_ids():
        if lab_id not in existing:  # gone some other way (a reboot, docker rm)
            forget_lab(lab_id)  # (its record may be of an older schema: not read)
            print(f"forgot lab {lab_id} (nothing of it is left in the engine)")
    kept = [lab.lab_id for lab in provider.labs() if lab.keep]
    live = [lab.lab_id for lab in provider.labs() if not lab.keep]
    if kept:
        CONSOLE.print(f"kept labs left alone: {', '.join(kept)} "
                      "(`amphora-harness down --lab ID` or `gc --all` removes them)")
    if live:
        CONSOLE.print(f"labs of live processes left alone: {', '.join(live)} "
                      "(--all removes them)")
    if args.images:
        builder = ImageBuilder(provider.client)
        for tag in builder.stale_images():
            if builder.remove_unused(tag):
                print(f"removed image {tag}")


def register(commands: argparse._SubParsersAction) -> None:
    start = add_command(
        commands, "up", help="bring a lab up and leave it running",
        description="Bring a lab up from a topology (fixtures/topologies/NAME.yaml or a file); "
        "flags override its fields. The lab stays up until `amphora-harness down`.")
    add_agent_options(start)
    start.add_argument("topology", nargs="?", default=DEFAULT_TOPOLOGY, metavar="TOPOLOGY",
                       help=f"a topology name or file (default: {DEFAULT_TOPOLOGY})")
    arrangement = start.add_mutually_exclusive_group()
    arrangement.add_argument("--single", dest="arrangement", action="store_const",
                             const="SINGLE", help="one amphora carries the load balancer")
    arrangement.add_argument("--active-standby", dest="arrangement", action="store_const",
                             const="ACTIVE_STANDBY", help="a VRRP pair carries it")
    start.add_argument("--amphorae", type=non_negative_int, help="how many (more are spares)")
    start.add_argument("--members", type=non_negative_int, help="how many members")
    lb = start.add_mutually_exclusive_group()
    lb.add_argument("--lb", metavar="LB", help="load balancer: fixtures/lbs/LB.yaml or a file")
    lb.add_argument("--no-lb", action="store_true", help="push no load balancer")
    start.set_defaults(func=up)

    show = add_command(commands, "status", help="nodes, agents, VRRP, load balancer, faults",
                       description="Nodes, agents, VRRP roles, load balancer and faults of "
                       "the lab (every lab up, without --lab). Exits 1 when a node or an agent "
                       "is unhealthy.")
    show.add_argument("--json", action="store_true", help="print JSON instead of a table")
    lab_option(show)
    show.set_defaults(func=status)

    enter = add_command(commands, "shell", help="a shell inside an amphora (or member)")
    enter.add_argument("node", metavar="NODE",
                       help="amphora index (0, 1), name or id prefix; m1, m2 for members")
    enter.add_argument("--data-plane", action="store_true",
                       help="in the amphora's data-plane namespace")
    lab_option(enter)
    enter.set_defaults(func=shell)

    log = add_command(commands, "logs", help="a node's console log (an amphora's: the agent)")
    log.add_argument("node", metavar="NODE", help="as for shell")
    log.add_argument("--tail", type=non_negative_int, default=0, help="only the last N lines")
    lab_option(log)
    log.set_defaults(func=logs)

    stop = add_command(commands, "down", help="remove a lab (containers, networks, state)")
    lab_option(stop)
    stop.add_argument("--all", action="store_true", help="every lab `up` brought up")
    stop.set_defaults(func=down)

    collect = add_command(
        commands, "gc", help="remove labs left by runs that are gone (containers, networks)")
    collect.add_argument("--all", action="store_true",
                         help="also remove labs of live processes and labs `up` keeps")
    collect.add_argument("--images", action="store_true",
                         help="also remove our images that no current input set produces")
    collect.set_defaults(func=gc)
