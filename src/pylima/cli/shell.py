"""`limactl shell` (the work is in `shellrun`, shared with `lima`)."""

from __future__ import annotations

import click

from pylima.cli.shellrun import run_shell


@click.command("shell", context_settings={"help_option_names": ["-h", "--help"],
                                          "ignore_unknown_options": True,
                                          "allow_interspersed_args": False})
@click.option("--shell", "shell_", help="Shell interpreter, e.g. /bin/bash")
@click.option("--workdir", help="Working directory")
@click.option("--start", is_flag=True, help="Start the instance if it is not already running")
@click.option("--instance", hidden=True, help="Instance name (used by the lima wrapper)")
@click.argument("args", nargs=-1, type=click.UNPROCESSED, metavar="INSTANCE [COMMAND...]")
def shell(shell_: str | None, workdir: str | None, start: bool, instance: str | None,
          args: tuple[str, ...]) -> int:
    """Execute shell in Lima.

    \b
    Examples:
      $ limactl shell default
      $ limactl shell default uname -a
      $ limactl shell --workdir=/tmp default pwd
    """
    argv = list(args)
    if instance is None:
        if not argv:
            raise click.UsageError("requires instance name as first argument")
        instance = argv.pop(0)
        if argv[:1] == ["--"]:
            del argv[0]  # as Lima: `limactl shell NAME -- CMD...`
    return run_shell(instance, argv, workdir=workdir, shell=shell_, start=start)
