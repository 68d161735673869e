"""`limactl copy` / `limactl cp`: files between the host and guests (`NAME:PATH`).

Two backends, as Lima's: scp, and rsync (faster for many files, and resumable) when
rsync is installed on the host and in the guest. `--backend=auto` (the default)
takes rsync where it can and falls back to scp. Both go through the instance's
ssh.config (`lima-NAME`), never becoming its ssh master.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Any

import click

log = logging.getLogger("pylima")
_REMOTE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*):(.*)$")
BACKENDS = ("scp", "rsync", "auto")
# run in the guest to learn whether rsync is there (Lima's check)
RSYNC_PROBE = "command -v rsync >/dev/null 2>&1"


@dataclass
class CopyPath:
    path: str
    instance: Any = None  # the Instance of a guest path
    name: str = ""

    @property
    def is_remote(self) -> bool:
        return self.instance is not None


@dataclass
class CopyPlan:
    paths: list[CopyPath]
    recursive: bool
    verbose: bool
    ssh_config: str = field(init=False)

    def __post_init__(self) -> None:
        from pylima.errors import LimaError
        from pylima.store import dirs

        configs = {str(p.instance.dir / dirs.SSH_CONFIG) for p in self.paths if p.is_remote}
        if not configs:
            raise LimaError("at least one of the paths must be an instance path "
                            "(INSTANCE:PATH)")
        if len(configs) > 1:
            raise LimaError("copying between two instances is not supported")
        self.ssh_config = configs.pop()

    def remote(self, p: CopyPath) -> str:
        return f"lima-{p.name}:{p.path}" if p.is_remote else p.path

    def ssh_command(self) -> list[str]:
        return ["ssh", "-F", self.ssh_config, "-o", "ControlMaster=no"]


def parse_copy_paths(paths: tuple[str, ...] | list[str]) -> list[CopyPath]:
    """`NAME:PATH` is a guest path (unless a local file has that name); each instance
    named must exist and run."""
    from pylima.errors import InstanceError, InstanceNotFound
    from pylima.store.instance import STATUS_RUNNING, inspect

    out = []
    for path in paths:
        m = _REMOTE.match(path)
        if not m or os.path.exists(path):
            out.append(CopyPath(path))
            continue
        name, rest = m.group(1), m.group(2)
        try:
            inst = inspect(name)
        except InstanceNotFound:
            raise InstanceNotFound(f"instance `{name}` does not exist, run `limactl create "
                                   f"{name}` to create a new instance") from None
        if inst.status != STATUS_RUNNING:
            raise InstanceError(f"instance `{name}` is stopped, run `limactl start {name}` "
                                "to start the instance")
        out.append(CopyPath(rest, inst, name))
    return out


def scp_argv(plan: CopyPlan) -> list[str]:
    argv = ["scp", *plan.ssh_command()[1:], "-v" if plan.verbose else "-q"]
    if plan.recursive:
        argv.append("-r")
    return [*argv, "--", *(plan.remote(p) for p in plan.paths)]


def rsync_argv(plan: CopyPlan, rsync: str = "rsync") -> list[str]:
    """rsync over the instance's ssh, with Lima's flags and its handling of trailing
    slashes under -r (so that directories land where scp -r puts them)."""
    argv = [rsync, "-a", *(("-v", "--progress") if plan.verbose else ("-q",))]
    if plan.recursive:
        argv.append("-r")
    argv += ["-e", shlex.join(plan.ssh_command())]
    paths = [CopyPath(p.path, p.instance, p.name) for p in plan.paths]
    if plan.recursive:
        # Lima's rule, in its order: a guest path ending in `/` strips the slash of the
        # others; a host path ending in `/` loses it; any other path gains one.
        for i, p in enumerate(paths):
            if p.path.endswith("/"):
                if p.is_remote:
                    for j, other in enumerate(paths):
                        if i != j:
                            other.path = other.path.removesuffix("/")
                else:
                    p.path = p.path.removesuffix("/")
            else:
                p.path += "/"
    return argv + [plan.remote(p) for p in paths]


def rsync_in_guests(plan: CopyPlan) -> bool:
    from pylima.sshutil import ssh_argv

    for p in plan.paths:
        if not p.is_remote:
            continue
        argv = [*ssh_argv(p.instance.dir, p.name), RSYNC_PROBE]
        log.debug("checking for rsync in %s: %s", p.name, argv)
        try:
            r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, check=False, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            return False
        if r.returncode != 0:
            log.debug("rsync not available on instance `%s`", p.name)
            return False
    return True


def copy_command(backend: str, paths: tuple[str, ...], recursive: bool, verbose: bool
                 ) -> list[str]:
    """The scp or rsync command line for `limactl copy`, as Lima picks the backend."""
    from pylima.errors import LimaError

    if backend not in BACKENDS:
        raise LimaError(f"invalid backend `{backend}`, must be one of: scp, rsync, auto")
    plan = CopyPlan(parse_copy_paths(paths), recursive, verbose)
    # rsync cannot copy between two remote ends: auto takes scp there, as Lima's does
    both_remote = sum(p.is_remote for p in plan.paths) > 1
    if backend == "rsync" or (backend == "auto" and not both_remote):
        rsync = shutil.which("rsync")
        if rsync is None:
            if backend == "rsync":
                raise LimaError('rsync not found on host: exec: "rsync": executable file '
                                "not found in $PATH")
            log.debug("rsync not found on host, falling back to scp")
        elif rsync_in_guests(plan):
            log.debug("using copy tool `%s`", rsync)
            return rsync_argv(plan, rsync)
        elif backend == "rsync":
            raise LimaError("rsync not available on guest(s)")
        else:
            log.debug("rsync not available on guest(s), falling back to scp")
    scp = shutil.which("scp")
    if scp is None:
        raise LimaError(('neither rsync nor scp found on host: ' if backend == "auto" else "")
                        + 'scp not found on host: exec: "scp": executable file not found '
                        "in $PATH")
    log.debug("using copy tool `%s`", scp)
    return scp_argv(plan)


@click.command("copy", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("paths", nargs=-1, required=True, metavar="SOURCE ... TARGET")
@click.option("-r", "--recursive", is_flag=True, help="Copy directories recursively")
@click.option("-v", "--verbose", is_flag=True, help="Enable verbose output")
@click.option("--backend", default="auto", show_default=True,
              help="Copy backend (scp|rsync|auto)")
@click.pass_context
def copy(ctx: click.Context, paths: tuple[str, ...], recursive: bool, verbose: bool,
         backend: str) -> int:
    """Copy files between host and guest.

    Prefix guest filenames with the instance name and a colon, e.g. `default:/etc/os-release`.

    \b
    Backends:
      auto   rsync when the host and the guest have it, else scp
      rsync  rsync over ssh (fast for many files; resumes), needs rsync on both sides
      scp    scp over ssh (always there)

    \b
    Examples:
      $ limactl copy default:/etc/os-release .
      $ limactl copy -v myfile.txt default:/tmp/
      $ limactl copy --backend=rsync -r ./mydir default:/tmp/
    """
    if len(paths) < 2:
        raise click.UsageError("requires at least 2 arguments: SOURCE DEST")
    debug = bool((ctx.find_root().obj or {}).get("debug"))
    argv = copy_command(backend, paths, recursive, verbose or debug)
    log.debug("executing %s (may take a long time)", argv)
    return subprocess.run(argv, check=False).returncode
