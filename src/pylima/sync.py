"""`limactl shell --sync DIR`: a copy of a host directory in the guest, worked on
there, and its changes brought back only when accepted.

The host directory goes to the same path under the guest user's home (Lima's
layout); after the command, the guest's copy comes back into a host temporary
directory first, so that the changes can be listed, viewed and accepted before
anything on the host is touched. Both directions are one tar stream over SSH
(through the host agent's master connection when there is one, a login of its own
otherwise): tar is in every guest, rsync is not (pylima's own image lacks it), and
for a project-sized tree one stream costs less than rsync's start and file-list
exchange (see the README's note). The host's rsync then lists the changes (`rsync
--itemize-changes`, the counts Lima shows) and applies them, keeping the owners of
the host's files.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pylima.errors import LimaError

# Lima's floor: "/Users/USER" has depth 3 (split on "/"), a project must be deeper.
MIN_DEPTH = 4


@dataclass
class Changes:
    """What the guest changed, as Lima counts it from `rsync --itemize-changes`."""

    added: int = 0
    deleted: int = 0
    modified: int = 0
    metadata: int = 0
    itemized: str = ""

    def __str__(self) -> str:
        if not (self.added or self.deleted or self.modified or self.metadata):
            return ""
        return (f"added: {self.added}, deleted: {self.deleted}, modified: {self.modified}, "
                f"metadata: {self.metadata}")

    @property
    def empty(self) -> bool:
        return str(self) == ""


def parse_itemized(output: str) -> Changes:
    """Count `rsync --itemize-changes` lines: `*deleting` is a deletion; a transfer
    (`<`, `>`, `c`) is an addition when its checksum column is `+`, else a
    modification; `.` with any attribute column set is a metadata change."""
    ch = Changes(itemized=output)
    for line in output.splitlines():
        if len(line) < 12:
            continue
        if line.startswith("*deleting"):
            ch.deleted += 1
        elif line[0] in "<>c":
            if line[2] == "+":
                ch.added += 1
            else:
                ch.modified += 1
        elif line[0] == "." and any(c != "." for c in line[2:11]):
            ch.metadata += 1
    return ch


def check_sync_dir(path: str, *, mounts: list[Any] | None, workdir: str | None,
                   home: str | None = None) -> str:
    """The absolute host directory to sync, or Lima's refusals in Lima's order (host
    mounts, no rsync, too shallow, --workdir), then pylima's own: a directory that is
    not there, the home directory or one that contains it."""
    if mounts:
        raise LimaError("cannot use `--sync` when the instance has host mounts configured, "
                        "start the instance with `--mount-none` to disable mounts")
    host_dir = os.path.abspath(path)
    if shutil.which("rsync") is None:
        raise LimaError('rsync is required for `--sync` but not found: exec: "rsync": '
                        "executable file not found in $PATH")
    depth = len(host_dir.split(os.sep))
    if depth < MIN_DEPTH:
        raise LimaError(f"expected the depth of the host working directory (`{host_dir}`) to "
                        f"be more than {MIN_DEPTH}, only got {depth} (Hint: cd to a deeper "
                        "directory)")
    if workdir:
        raise LimaError("cannot use `--workdir` and `--sync` at the same time")
    if not os.path.isdir(host_dir):
        raise LimaError(f"cannot sync `{host_dir}`: no such directory")
    real = os.path.realpath(host_dir)
    home_dir = os.path.realpath(home or os.path.expanduser("~"))
    if real == home_dir or home_dir.startswith(real.rstrip("/") + "/"):
        raise LimaError(f"cannot sync `{host_dir}`: it is the home directory or contains it",
                        hint="sync a project directory")
    return host_dir


def guest_dir(config: dict[str, Any], host_dir: str) -> str:
    """Where the copy lives in the guest: the host path under the guest user's home."""
    home = str((config.get("user") or {}).get("home") or "")
    return home.rstrip("/") + host_dir


class Syncer:
    """The copies of one `--sync` run, over `ssh_argv` (a list that runs a shell
    script given as its last argument in the guest)."""

    def __init__(self, ssh_argv: list[str], host_dir: str, guest: str) -> None:
        self.ssh, self.host_dir, self.guest = ssh_argv, host_dir, guest
        self._tmp: str | None = None

    def _remote(self, script: str) -> list[str]:
        return [*self.ssh, "--", script]

    def _pipe(self, producer: list[str], consumer: list[str], what: str) -> None:
        prod = subprocess.Popen(producer, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        assert prod.stdout is not None
        cons = subprocess.run(consumer, stdin=prod.stdout, capture_output=True)
        prod.stdout.close()
        perr = prod.stderr.read() if prod.stderr else b""
        prc = prod.wait()
        # tar's status 1: a file changed while read, the copy is still whole
        if prc not in (0, 1) or cons.returncode != 0:
            tail = " ".join((cons.stderr or perr).decode(errors="replace").split()[-40:])
            code = cons.returncode or prc
            raise LimaError(f"failed to {what}: {tail or f'exit status {code}'}")

    def copy_in(self) -> None:
        """The host directory into the guest (a previous copy there is replaced)."""
        g = shlex.quote(self.guest)
        self._pipe(["tar", "-C", self.host_dir, "-cf", "-", "."],
                   self._remote(f"rm -rf {g} && mkdir -p {g} && tar -C {g} -xpf -"),
                   "sync the directory to the guest")

    def fetch(self) -> str:
        """The guest's copy into a host temporary directory (owned by the host user);
        its path."""
        if self._tmp is None:
            base = tempfile.mkdtemp(prefix="lima-guest-synced-")
            tmp = os.path.join(base, os.path.basename(self.host_dir))
            os.mkdir(tmp)
            self._pipe(self._remote(f"tar -C {shlex.quote(self.guest)} -cf - ."),
                       ["tar", "-C", tmp, "-xpf", "-", "--no-same-owner"],
                       "sync back the changes from guest instance to host")
            self._tmp = tmp
        return self._tmp

    def _rsync(self, *extra: str) -> subprocess.CompletedProcess[str]:
        src = self.fetch().rstrip("/") + "/"
        # --checksum: tar keeps whole seconds, so an edit in the second of the copy
        # that keeps the size would pass rsync's size-and-time check (both sides local)
        argv = ["rsync", "-a", "--checksum", "--no-owner", "--no-group", "--delete", *extra,
                src,
                self.host_dir.rstrip("/") + "/"]
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if r.returncode != 0:
            raise LimaError(f"failed to sync back the changes from guest instance to host: "
                            f"{r.stderr.strip()}")
        return r

    def changes(self) -> Changes:
        return parse_itemized(self._rsync("--dry-run", "--itemize-changes").stdout)

    def apply(self) -> None:
        """The guest's copy onto the host directory: new, changed and deleted files,
        modes and symlinks; the host's owners are kept."""
        self._rsync()

    def remove_guest_copy(self) -> bool:
        r = subprocess.run(self._remote(f"rm -rf {shlex.quote(self.guest)}"),
                           stdin=subprocess.DEVNULL, capture_output=True)
        return r.returncode == 0

    def close(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(Path(self._tmp).parent, ignore_errors=True)
            self._tmp = None
