"""`limactl copy` / `limactl cp`: files between the host and guests (`NAME:PATH`)."""

from __future__ import annotations

import logging
import os
import re

import click

log = logging.getLogger("pylima")
_REMOTE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*):(.*)$")


def scp_argv(sources: tuple[str, ...], target: str, recursive: bool) -> list[str]:
    from pylima.errors import InstanceError, LimaError
    from pylima.store import dirs
    from pylima.store.instance import STATUS_RUNNING, inspect

    config = None
    out: list[str] = []
    for path in (*sources, target):
        m = _REMOTE.match(path)
        if m and not os.path.exists(path):
            name, rest = m.group(1), m.group(2)
            inst = inspect(name)
            if inst.status != STATUS_RUNNING:
                raise InstanceError(f"instance `{name}` is stopped, run `limactl start {name}` "
                                    "to start the instance")
            if config is not None and config != inst.dir / dirs.SSH_CONFIG:
                raise LimaError("copying between two instances is not supported")
            config = inst.dir / dirs.SSH_CONFIG
            out.append(f"lima-{name}:{rest}")
        else:
            out.append(path)
    if config is None:
        raise LimaError("at least one of the paths must be an instance path (INSTANCE:PATH)")
    from pylima.sshutil import scp_argv as build_scp_argv

    return build_scp_argv(config, out[:-1], out[-1], recursive)


@click.command("copy", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("paths", nargs=-1, required=True, metavar="SOURCE ... TARGET")
@click.option("-r", "--recursive", is_flag=True, help="Copy directories recursively")
@click.option("-v", "--verbose", is_flag=True, help="Enable verbose output")
def copy(paths: tuple[str, ...], recursive: bool, verbose: bool) -> int:
    """Copy files between host and guest.

    Prefix guest filenames with the instance name and a colon, e.g. `default:/etc/os-release`.
    """
    import subprocess

    if len(paths) < 2:
        raise click.UsageError("requires at least 2 arguments: SOURCE DEST")
    argv = scp_argv(paths[:-1], paths[-1], recursive)
    if verbose:
        argv.remove("-q")
    log.debug("executing scp: %s", argv)
    return subprocess.run(argv, check=False).returncode
