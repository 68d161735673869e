"""`limactl show-ssh` (deprecated in Lima; `ssh -F ~/.lima/NAME/ssh.config lima-NAME`)."""

from __future__ import annotations

import logging
import shlex
from typing import Any

import click

from pylima.cli.common import get_instance_or_fail

log = logging.getLogger("pylima")
FORMATS = ("cmd", "args", "options", "config")


def ssh_options(inst: Any) -> list[tuple[str, str]]:
    from pylima.sshutil import dot_ssh_identities, forwarding_options
    from pylima.store import dirs

    cfg = inst.config or {}
    user = (cfg.get("user") or {}).get("name", "lima")
    ssh_cfg = cfg.get("ssh") or {}
    extra = dot_ssh_identities() if ssh_cfg.get("loadDotSSHPubKeys") else []
    return [
        ("IdentityFile", f'"{dirs.config_dir() / dirs.USER_KEY}"'),
        *[("IdentityFile", f'"{p}"') for p in extra],
        ("PreferredAuthentications", "publickey"),
        ("Compression", "no"),
        ("BatchMode", "yes"),
        ("IdentitiesOnly", "yes"),
        ("User", str(user)),
        ("ControlMaster", "auto"),
        ("ControlPath", f'"{inst.dir}/{dirs.SSH_SOCK}"'),
        ("ControlPersist", "yes"),
        *forwarding_options(ssh_cfg),
        ("Hostname", "127.0.0.1"),
        ("Port", str(inst.ssh_local_port)),
    ]


@click.command("show-ssh", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("instance")
@click.option("-f", "--format", "fmt", type=click.Choice(FORMATS), default="cmd",
              help="Format: cmd, args, options, config")
def show_ssh(instance: str, fmt: str) -> None:
    """Show the SSH command line (DEPRECATED; use `ssh -F` instead)."""
    inst = get_instance_or_fail(instance)
    log.warning("`limactl show-ssh` is deprecated. Instead, use `ssh -F %s %s`.",
                inst.ssh_config_file, inst.hostname)
    opts = ssh_options(inst)
    if fmt == "config":
        click.echo(f"Host {inst.hostname}")
        for k, v in opts:
            click.echo(f"  {k} {v}")
        return
    args = [f"-o{k}={v}" if fmt != "options" else f"{k}={v}" for k, v in opts]
    if fmt == "options":
        click.echo("\n".join(args))
    elif fmt == "args":
        click.echo(shlex.join(args))
    else:
        click.echo(shlex.join(["ssh", *args, inst.hostname]))
