"""`limactl sudoers`: the sudoers file for socket_vmnet, which exists on macOS only;
Lima refuses it elsewhere, and so does pylima, with Lima's message."""

from __future__ import annotations

import click


@click.command("sudoers", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("file", required=False, metavar="[SUDOERSFILE-TO-CHECK]")
@click.option("--check", is_flag=True,
              help="Check that the sudoers file is up-to-date with the networks "
              "configuration (macOS only)")
def sudoers(file: str | None, check: bool) -> None:
    """Generate the content of the /etc/sudoers.d/lima file.

    The file enables vmnet.framework networks (socket_vmnet) on macOS; Lima and
    pylima support this command on macOS only.
    """
    from pylima.errors import LimaError

    raise LimaError("sudoers command is only supported on macOS right now")
