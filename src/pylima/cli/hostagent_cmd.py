"""`limactl hostagent` (internal): the per-instance daemon `limactl start` spawns."""

from __future__ import annotations

import click


@click.command("hostagent", hidden=True,
               context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("name")
@click.option("-p", "--pidfile", required=True, help="PID file")
@click.option("--socket", "socket_path", required=True, help="Path of hostagent socket")
@click.option("--lock-fd", type=int, default=None,
              help="The instance lock, already taken by the caller (internal)")
@click.option("--progress", is_flag=True, help="Show provision script progress by "
              "monitoring cloud-init logs")
def hostagent(name: str, pidfile: str, socket_path: str, lock_fd: int | None,
              progress: bool) -> int:
    """Run the host agent of instance NAME (internal)."""
    from pylima.hostagent.agent import main

    return main(name, pidfile, socket_path, lock_fd, progress)
