"""The lab's nftables tables on the host: tables of the `bridge` family whose names carry the id
of the lab they belong to.

Link faults (harness.faults) drop frames with rules in such tables. They live on the host of
the lab's engine, not in the engine's objects, so removing those does not remove them: the lab
removes its own at teardown, and gc removes those of every lab that no longer exists, so a
crashed run leaves none behind. Every function here takes the shell of that host
(harness.lab.host_shell): this one's by default; an engine elsewhere removes a lab's tables in
its own teardown (harness.lab.providers.fault_node).
"""

from __future__ import annotations

import subprocess

from harness.lab.host_shell import THIS_HOST, HostShell

TABLE_PREFIX = "amphora_harness_"


def nft(args: list[str], shell: HostShell = THIS_HOST) -> subprocess.CompletedProcess[str]:
    """nft in the namespace of the lab's bridges. A script is one argument: nft reads it as it
    reads a file, and no shell needs a standard input."""
    return shell.run(["nft", *args])


def table_name(lab_id: str, suffix: str) -> str:
    """The name of a lab's table; suffix (no underscore) tells the lab's tables apart."""
    if "_" in suffix:
        raise ValueError(f"a table suffix has no underscore: {suffix!r}")
    return f"{TABLE_PREFIX}{lab_id}_{suffix}"


def lab_tables(shell: HostShell = THIS_HOST) -> dict[str, str]:
    """The lab tables on the host: table name -> the id of the lab it belongs to."""
    listed = nft(["list", "tables", "bridge"], shell)
    tables = {}
    for line in listed.stdout.splitlines():
        words = line.split()
        if words[:2] == ["table", "bridge"] and words[2].startswith(TABLE_PREFIX):
            lab_id = words[2].removeprefix(TABLE_PREFIX).rpartition("_")[0]
            tables[words[2]] = lab_id
    return tables


def remove_lab_tables(lab_id: str | None = None, *, keep: frozenset[str] = frozenset(),
                      shell: HostShell = THIS_HOST) -> list[str]:
    """Delete the tables of one lab (of every lab whose id is not in `keep` when lab_id is
    None, which is what gc does). Returns the names removed."""
    removed = []
    for table, owner in lab_tables(shell).items():
        if (owner == lab_id) if lab_id else (owner not in keep):
            nft(["delete", "table", "bridge", table], shell)
            removed.append(table)
    return removed
