"""The lab's nftables tables on the host: tables of the `bridge` family whose names carry the id
of the lab they belong to.

Link faults (harness.faults) drop frames with rules in such tables. They live on the host, not
in the provider's engine, so the provider's teardown does not see them: the lab removes its own
at teardown, and gc removes those of every lab that no longer exists, so a crashed run leaves
none behind.
"""

from __future__ import annotations

import subprocess

TABLE_PREFIX = "amphora_harness_"


def nft(args: list[str], script: str | None = None,
        namespace: str | None = None) -> subprocess.CompletedProcess[str]:
    """nft on the host, or inside `namespace` when the lab's bridges live in one."""
    prefix = ["ip", "netns", "exec", namespace] if namespace else []
    return subprocess.run([*prefix, "nft", *args], input=script, text=True,
                          capture_output=True, check=False)


def table_name(lab_id: str, suffix: str) -> str:
    """The name of a lab's table; suffix (no underscore) tells the lab's tables apart."""
    if "_" in suffix:
        raise ValueError(f"a table suffix has no underscore: {suffix!r}")
    return f"{TABLE_PREFIX}{lab_id}_{suffix}"


def lab_tables(namespace: str | None = None) -> dict[str, str]:
    """The lab tables on the host: table name -> the id of the lab it belongs to."""
    listed = nft(["list", "tables", "bridge"], namespace=namespace)
    tables = {}
    for line in listed.stdout.splitlines():
        words = line.split()
        if words[:2] == ["table", "bridge"] and words[2].startswith(TABLE_PREFIX):
            lab_id = words[2].removeprefix(TABLE_PREFIX).rpartition("_")[0]
            tables[words[2]] = lab_id
    return tables


def remove_lab_tables(lab_id: str | None = None, *, keep: frozenset[str] = frozenset(),
                      namespace: str | None = None) -> list[str]:
    """Delete the tables of one lab (of every lab whose id is not in `keep` when lab_id is
    None, which is what gc does). Returns the names removed."""
    removed = []
    for table, owner in lab_tables(namespace).items():
        if (owner == lab_id) if lab_id else (owner not in keep):
            nft(["delete", "table", "bridge", table], namespace=namespace)
            removed.append(table)
    return removed
