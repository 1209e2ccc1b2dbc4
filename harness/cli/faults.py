"""`amphora-harness fault` and `heal`: faults on a standing lab, kept in its record until healed."""

from __future__ import annotations

import argparse

from harness.cli.arguments import add_command, chosen_lab, lab_option
from harness.cli.console import CONSOLE, OUT, CommandError, step
from harness.faults.kinds import KINDS
from harness.faults.standing import apply_fault, heal_faults


def fault(args: argparse.Namespace) -> None:
    options = {"percent": args.percent, "delay_ms": args.delay_ms, "jitter_ms": args.jitter_ms}
    title = f"fault {args.kind} {' '.join(args.targets)}".strip()
    with chosen_lab(args) as lab, step(title):
        applied = apply_fault(lab, args.kind, args.targets, options)
    OUT.print(f"applied: {applied} (`amphora-harness heal` undoes it)")


def heal(args: argparse.Namespace) -> None:
    with chosen_lab(args) as lab:
        if not lab.record.faults:
            OUT.print("no active faults")
            return
        with step(f"healing {len(lab.record.faults)} fault(s)"):
            errors = heal_faults(lab, on_step=lambda text: CONSOLE.log(text))
    if errors:
        raise CommandError("; ".join(errors))
    OUT.print("healed")


def register(commands: argparse._SubParsersAction) -> None:
    inject = add_command(
        commands, "fault", help="inject a fault (until `heal`)",
        description="Inject a fault. Kinds:\n" + "\n".join(
            f"  {name:16} {kind.help}" for name, kind in KINDS.items())
        + "\nAMP: amphora index, name or id prefix, or `active` (the one answering on the VIP).",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    inject.add_argument("kind", choices=sorted(KINDS), metavar="KIND")
    inject.add_argument("targets", nargs="*", metavar="AMP")
    inject.add_argument("--percent", type=int, default=30, help="loss: percent (default 30)")
    inject.add_argument("--delay-ms", type=int, default=100, help="delay: ms (default 100)")
    inject.add_argument("--jitter-ms", type=int, default=0, help="delay: jitter ms")
    lab_option(inject)
    inject.set_defaults(func=fault)

    cure = add_command(commands, "heal", help="heal every active fault, newest first")
    lab_option(cure)
    cure.set_defaults(func=heal)
