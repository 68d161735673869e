"""`limactl snapshot create|apply|delete|list INSTANCE` (aliases save, load, del, ls).

Lima's command: experimental (it says so), `--tag` required for all but `list`
(`expected tag`), `list` prints QEMU's table less its heading and `--quiet` only the
tags. The work is `api.snapshot_instance`.
"""

from __future__ import annotations

import logging

import click

log = logging.getLogger("pylima")

_CTX = {"help_option_names": ["-h", "--help"]}
ALIASES = {"save": "create", "load": "apply", "del": "delete", "ls": "list"}


class SnapshotGroup(click.Group):
    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, ALIASES.get(cmd_name, cmd_name))

    def resolve_command(self, ctx: click.Context, args: list[str]
                        ) -> tuple[str | None, click.Command | None, list[str]]:
        _, cmd, rest = super().resolve_command(ctx, args)
        return cmd.name if cmd else None, cmd, rest


def _min_args(instances: tuple[str, ...]) -> str:
    """cobra's MinimumNArgs(1): the first argument is the instance, the rest unused."""
    if not instances:
        raise click.UsageError("requires at least 1 arg(s), only received 0")
    return instances[0]


def _run(action: str, instances: tuple[str, ...], tag: str = "") -> str:
    from pylima import api
    from pylima.store.instance import inspect

    log.warning("`limactl snapshot` is experimental")
    name = _min_args(instances)
    inst = inspect(name)
    return api.snapshot_instance(inst, action, tag)


@click.group("snapshot", cls=SnapshotGroup, context_settings=_CTX)
def snapshot() -> None:
    """Manage instance snapshots.

    \b
    Examples:
      List all snapshots of an instance:
      $ limactl snapshot list default
      Create a snapshot:
      $ limactl snapshot create default --tag snap1
      Apply (restore) a snapshot:
      $ limactl snapshot apply default --tag snap1
      Delete a snapshot:
      $ limactl snapshot delete default --tag snap1
    """


_tag = click.option("--tag", default="", help="Name of the snapshot")
_instances = click.argument("instances", nargs=-1, metavar="INSTANCE")


@snapshot.command("create", context_settings=_CTX)
@_instances
@_tag
def create(instances: tuple[str, ...], tag: str) -> None:
    """Create (save) a snapshot."""
    _run("create", instances, tag)


@snapshot.command("apply", context_settings=_CTX)
@_instances
@_tag
def apply(instances: tuple[str, ...], tag: str) -> None:
    """Apply (load) a snapshot."""
    _run("apply", instances, tag)


@snapshot.command("delete", context_settings=_CTX)
@_instances
@_tag
def delete(instances: tuple[str, ...], tag: str) -> None:
    """Delete (del) a snapshot."""
    _run("delete", instances, tag)


@snapshot.command("list", context_settings=_CTX)
@_instances
@click.option("-q", "--quiet", is_flag=True, help="Only show tags")
def list_(instances: tuple[str, ...], quiet: bool) -> None:
    """List existing snapshots."""
    from pylima.drivers import snapshot_tags

    out = _run("list", instances)
    if quiet:
        for tag in snapshot_tags(out):
            click.echo(tag)
        return
    click.echo(out, nl=False)
