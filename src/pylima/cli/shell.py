"""`limactl shell` (the work is in `shellrun`, shared with `lima`)."""

from __future__ import annotations

import click

from pylima.cli.shellrun import run_shell


def _refuse_flag(arg: str) -> None:
    """Lima's (cobra's) error for an unknown flag where a name or command must come."""
    if arg.startswith("--") and arg != "--":
        raise click.UsageError(f"unknown flag: {arg.split('=', 1)[0]}")
    if arg.startswith("-") and len(arg) > 1 and arg != "--":
        raise click.UsageError(f"unknown shorthand flag: '{arg[1]}' in {arg}")


class _ShellCommand(click.Command):
    """Remembers whether the command line had a `--` before the first argument that
    is not shell's own flag: click consumes it, and with --instance it decides
    whether `lima -- --flag` runs `--flag` or refuses an unknown flag."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        from pylima.cli.main import option_arity

        takes_value = option_arity(self)
        i = 0
        while i < len(args) and args[i].startswith("-") and args[i] != "--":
            i += 2 if takes_value.get(args[i]) else 1
        ctx.meta["pylima.shell.dashdash"] = i < len(args) and args[i] == "--"
        return super().parse_args(ctx, args)


@click.command("shell", cls=_ShellCommand, context_settings={"help_option_names": ["-h", "--help"],
                                          "ignore_unknown_options": True,
                                          "allow_interspersed_args": False})
@click.option("--shell", "shell_", help="Shell interpreter, e.g. /bin/bash")
@click.option("--workdir", help="Working directory")
@click.option("--reconnect", is_flag=True, help="Reconnect to the SSH session")
@click.option("--preserve-env", is_flag=True, help="Propagate environment variables to the shell")
@click.option("--start", is_flag=True, help="Start the instance if it is not already running")
@click.option("--sync", "sync_dir", metavar="DIR",
              help="Copy a host directory to the guest and vice-versa upon exit")
@click.option("--instance", hidden=True, help="Instance name (used by the lima wrapper)")
@click.argument("args", nargs=-1, type=click.UNPROCESSED, metavar="INSTANCE [COMMAND...]")
def shell(shell_: str | None, workdir: str | None, reconnect: bool, preserve_env: bool,
          start: bool, sync_dir: str | None, instance: str | None,
          args: tuple[str, ...]) -> int:
    """Execute shell in Lima.

    `lima` is `limactl shell $LIMA_INSTANCE` ($LIMA_INSTANCE defaults to "default").

    \b
    --preserve-env passes the host's environment variables to the guest shell,
    except those the block list names: $LIMA_SHELLENV_BLOCK replaces the default
    list (see `limactl info`), or extends it when it starts with `+`;
    $LIMA_SHELLENV_ALLOW exempts variables from it. Both are comma-separated
    names, `*` matching any text.

    \b
    Examples:
      $ limactl shell default
      $ limactl shell default uname -a
      $ limactl shell --workdir=/tmp default pwd
      $ limactl shell --sync . default make test

    \b
    --sync DIR copies DIR to the same path under the guest user's home, runs the
    command (or the shell) there, then lists what changed and copies the changes
    back only when accepted (without asking with --tty=false or --yes). The
    instance must have no host mounts (`limactl start --mount-none`).
    """
    argv = list(args)
    if instance is None:
        if not argv:
            raise click.UsageError("requires instance name as first argument")
        _refuse_flag(argv[0])
        instance = argv.pop(0)
        if argv[:1] == ["--"]:
            del argv[0]  # as Lima: `limactl shell NAME -- CMD...`
    elif argv[:1] == ["--"]:
        del argv[0]
    elif argv and not click.get_current_context().meta.get("pylima.shell.dashdash"):
        # --instance (the lima wrapper): the command comes first, after shell's flags
        _refuse_flag(argv[0])
    root = click.get_current_context().find_root().obj or {}
    return run_shell(instance, argv, workdir=workdir, shell=shell_, start=start,
                     preserve_env=preserve_env, reconnect=reconnect, sync=sync_dir,
                     tty=root.get("tty"))
