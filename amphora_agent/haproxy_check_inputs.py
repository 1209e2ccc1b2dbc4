"""What one `haproxy -c` of a load balancer's config read, so that a reload can tell whether a
new check would read exactly the same and skip it.

A push is an upload (checked: a config haproxy refuses is a 400 and never replaces the old one)
and then a reload, which checks again because the files the config names may have changed in
between (a certificate deleted: the reload must be refused, not half-applied). That second
check cost about 10-20 ms of every push here. It is skipped only when everything it would
read is what the last check of that load balancer read:

- the config's bytes (a digest);
- every file in the load balancer's certificate directory ({base_cert_dir}/{lb_id}, where the
  controller puts certificates, crt-lists, CA and CRL files), walked recursively;
- every absolute path the config names anywhere (a word starting with '/', or after '@' or
  '(' as in `map(/x)` and `file@/x`), except the server-state file, which `haproxy -c` does not
  read and the agent rewrites before every reload;
- the other files of the check's command line (the user-group file) and haproxy itself;

each compared by type, size, mtime_ns, inode and device (the agent replaces files by rename,
so a rewrite is a new inode; an edit in place moves mtime_ns). Any difference, a path that
cannot be judged (a directory outside the certificate directory, a file argument given as a
relative path, crt-base/ca-base/key-base, which make later relative names mean files) or no
record at all (the agent restarted, the last check failed) means: check again, as before.
Sockets and other special files (the stats and log sockets) count by type only: haproxy's
check does not read them as files.

Not covered, as before the skip: what haproxy resolves through libc at load (a server given
by host name): a check at reload would only have sampled it a moment earlier. Octavia's
configs name servers by address.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path

# Directives after which a relative file name would be read relative to haproxy's working
# directory or to a base directory: a config with one of these not followed by an absolute
# path is always checked again.
_FILE_KEYWORDS = frozenset({
    "crt", "crt-list", "ca-file", "crl-file", "ca-verify-file", "ca-sign-file",
    "issuers-chain-path", "errorfile", "lua-load", "lua-load-per-thread", "-f", "file",
    "lf-file", "ssl-dh-param-file", "51degrees-data-file", "wurfl-data-file",
    "deviceatlas-json-file",
})
# How many words after its keyword a file argument comes (`errorfile 503 /x`); else the next.
_FILE_ARGUMENT_OFFSET = {"errorfile": 2}
_BASE_KEYWORDS = frozenset({"crt-base", "ca-base", "key-base"})
# An absolute path anywhere in a word: at its start, or after '@', '(', ',' or '='.
_ABSOLUTE_PATH = re.compile(r"(?:^|(?<=[@(,=]))/[^\s,()\"']*")
_MAP_ARGUMENT = re.compile(r"\bmap\w*\(([^),]*)")

Stamp = tuple[int, ...]


@dataclass(frozen=True)
class CheckInputs:
    config_digest: bytes
    files: tuple[tuple[str, Stamp], ...]


def check_inputs(config: bytes, cert_dir: Path, server_state_file: Path | None,
                 other_files: Iterable[Path]) -> CheckInputs | None:
    """What a check of config would read now; None when that cannot be judged (check)."""
    named = _named_paths(config.decode(errors="replace"))
    if named is None:
        return None
    file_arguments, paths = named
    cert_root = os.path.realpath(cert_dir)
    stamps: dict[str, Stamp] = dict(_walk(cert_dir))
    ignored = {os.path.realpath(server_state_file)} if server_state_file else set()
    for path in [*paths, *(str(p) for p in other_files)]:
        real = os.path.realpath(path)
        if real in ignored:
            continue
        stamp = _stamp(path)
        if stat.S_ISDIR(stamp[0]) and not _within(real, cert_root):
            if path in file_arguments:
                return None  # a directory haproxy reads whole (crt DIR): not judged
            stamp = stamp[:1]  # a URL path such as `path_beg /` that happens to be a directory
        stamps[path] = stamp
    return CheckInputs(sha256(config).digest(), tuple(sorted(stamps.items())))


def _named_paths(text: str) -> tuple[set[str], list[str]] | None:
    """The absolute paths given as file arguments, and every absolute path the config names
    (comments included: a few more stats, never a missed file); None if it names a file by a
    relative path."""
    file_arguments: set[str] = set()
    paths: list[str] = []
    for raw in text.splitlines():
        words = [word.strip("\"'") for word in raw.split()]
        for index, word in enumerate(words):
            if word in _BASE_KEYWORDS:
                return None
            argument = index + _FILE_ARGUMENT_OFFSET.get(word, 1)
            if word in _FILE_KEYWORDS and argument < len(words):
                if not words[argument].startswith("/"):
                    return None
                file_arguments.add(words[argument])
            paths.extend(match.group(0) for match in _ABSOLUTE_PATH.finditer(word))
        for argument in _MAP_ARGUMENT.findall(raw):
            if not argument.strip().strip("\"'").startswith("/"):
                return None
    return file_arguments, paths


def _stamp(path: str | os.DirEntry[str]) -> Stamp:
    try:
        st = os.stat(path)
    except OSError:
        return (0,)  # missing (or unreadable): a file appearing later changes this
    kind = stat.S_IFMT(st.st_mode)
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        return (kind,)  # a socket, FIFO or device: not read as a file by the check
    return (kind, st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)


def _walk(directory: Path) -> Iterable[tuple[str, Stamp]]:
    yield str(directory), _stamp(str(directory))
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    for entry in entries:
        yield entry.path, _stamp(entry.path)
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(Path(entry.path))


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")
