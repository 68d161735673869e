"""`limactl delete`."""

from __future__ import annotations

import logging

import click

log = logging.getLogger("pylima")


@click.command("delete", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("instances", nargs=-1, required=True, metavar="INSTANCE [INSTANCE, ...]")
@click.option("-f", "--force", is_flag=True, help="Forcibly kill the processes")
def delete(instances: tuple[str, ...], force: bool) -> None:
    """Delete an instance of Lima."""
    from pylima import api
    from pylima.errors import InstanceNotFound, LimaError
    from pylima.store import dirs
    from pylima.store.instance import inspect

    for name in instances:
        try:
            inst = inspect(name)
        except InstanceNotFound:
            log.warning("Ignoring non-existent instance `%s`", name)
            continue
        # A directory without lima.yaml may be a clone in progress (or hold a disk
        # nothing else would reach again): never removed, not even with --force.
        if inst.config is None and not (inst.dir / dirs.LIMA_YAML).exists():
            raise LimaError(f"instance `{name}` directory `{inst.dir}` exists but its "
                            f"`lima.yaml` could not be read; it was NOT deleted, in case it is "
                            "currently being cloned into. If no `limactl` operation is using "
                            "it, remove it manually")
        try:
            api.delete_instance(inst, force=force)
        except LimaError as e:
            raise LimaError(f"failed to delete instance `{name}`: {e.message}", e.hint) from e
        log.info("Deleted `%s` (`%s`)", name, inst.dir)
