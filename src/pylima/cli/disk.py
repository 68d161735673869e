"""`limactl disk create|list|delete|resize|unlock|import`: additional disks in $LIMA_HOME/_disks."""

from __future__ import annotations

import json
import logging

import click

log = logging.getLogger("pylima")


@click.group("disk", context_settings={"help_option_names": ["-h", "--help"]})
def disk() -> None:
    """Lima disk management.

    \b
    Example:
      Create a disk:
      $ limactl disk create DISK --size SIZE [--format qcow2]
      List existing disks:
      $ limactl disk ls
      Delete a disk:
      $ limactl disk delete DISK
      Resize a disk:
      $ limactl disk resize DISK --size SIZE
      Import an existing disk image (qcow2 or raw):
      $ limactl disk import DISK DISKPATH
    """


def _size(text: str) -> int:
    from pylima.config.units import parse_size
    from pylima.errors import LimaError

    try:
        return parse_size(text)
    except ValueError as e:
        raise LimaError(f"failed to parse size `{text}`: {e}") from e


@disk.command("create")
@click.argument("name", metavar="DISK")
@click.option("--size", required=True, help="Configure the disk size")
@click.option("--format", "fmt", default="qcow2", show_default=True,
              help="Specify the disk format")
def create(name: str, size: str, fmt: str) -> None:
    """Create a Lima disk."""
    from pylima.errors import LimaError
    from pylima.images.disk import create_data_disk

    if fmt not in ("qcow2", "raw"):
        raise LimaError(f"disk format `{fmt}` not supported, use `qcow2` or `raw` instead")
    create_data_disk(name, _size(size), fmt)


@disk.command("list")
@click.argument("names", nargs=-1)
@click.option("--json", "json_", is_flag=True, help="JSONify output")
def list_(names: tuple[str, ...], json_: bool) -> None:
    """List existing Lima disks."""
    from pylima.cli.listing import tabwrite
    from pylima.config.units import format_size
    from pylima.images.disk import list_data_disks

    disks = list_data_disks()
    if names:
        known = {d.name for d in disks}
        for n in names:
            if n not in known:
                log.warning("No disk matching %s found.", n)
        disks = [d for d in disks if d.name in names]
    if json_:
        for d in disks:
            click.echo(json.dumps(d.to_json(), separators=(",", ":")))
        return
    rows = [["NAME", "SIZE", "FORMAT", "DIR", "IN-USE-BY"]]
    if not disks:
        log.warning("No disk found. Run `limactl disk create DISK --size SIZE` to create a "
                    "disk.")
    for d in disks:
        rows.append([d.name, format_size(d.size), d.format, str(d.dir), d.instance or ""])
    click.echo(tabwrite(rows), nl=False)


disk.add_command(list_, "ls")


@disk.command("delete")
@click.argument("names", nargs=-1, required=True, metavar="DISK [DISK, ...]")
@click.option("-f", "--force", is_flag=True, help="Force delete")
def delete(names: tuple[str, ...], force: bool) -> None:
    """Delete one or more Lima disks."""
    from pylima.images.disk import delete_data_disk
    from pylima.store.instance import inspect, instance_names

    users: dict[str, list[str]] = {}
    if not force:
        for inst_name in instance_names():
            cfg = inspect(inst_name).config or {}
            for d in cfg.get("additionalDisks") or []:
                users.setdefault(d if isinstance(d, str) else d.get("name", ""),
                                 []).append(inst_name)
    for n in names:
        if n in users:
            log.warning("Skipping deleting disk `%s`, disk is referenced by one or more "
                        "non-running instances: `%s`", n, users[n])
            log.warning("To delete anyway, run `limactl disk delete --force %s`", n)
            continue
        path = delete_data_disk(n, force=force)
        if path is None:
            log.warning("Ignoring non-existent disk `%s`", n)
        else:
            log.info("Deleted `%s` (`%s`)", n, path)


disk.add_command(delete, "rm")
disk.add_command(delete, "remove")


@disk.command("resize")
@click.argument("name", metavar="DISK")
@click.option("--size", required=True, help="Disk size")
def resize(name: str, size: str) -> None:
    """Resize existing Lima disk."""
    from pylima.images.disk import resize_data_disk
    from pylima.store.instance import STATUS_RUNNING, inspect, instance_names

    running = {n for n in instance_names() if inspect(n).status == STATUS_RUNNING}
    d = resize_data_disk(name, _size(size), running_instances=running)
    log.info("Resized disk `%s` (`%s`)", name, getattr(d, "dir", ""))


@disk.command("unlock")
@click.argument("names", nargs=-1, required=True, metavar="DISK [DISK, ...]")
def unlock(names: tuple[str, ...]) -> None:
    """Unlock one or more Lima disks."""
    from pylima.images.disk import DiskError, inspect_data_disk, unlock_data_disk
    from pylima.store.instance import STATUS_RUNNING, inspect, instance_names

    for n in names:
        try:
            d = inspect_data_disk(n)
        except DiskError:
            log.warning("Ignoring non-existent disk `%s`", n)
            continue
        if not d.instance:
            log.warning("Ignoring unlocked disk `%s`", n)
            continue
        # An instance that no longer exists cannot be using it.
        if d.instance in instance_names():
            inst = inspect(d.instance)
            if inst.errors:
                log.warning("Cannot unlock disk `%s`, attached instance `%s` has errors: %s",
                            n, d.instance, inst.errors)
                continue
            if inst.status == STATUS_RUNNING:
                log.warning("Cannot unlock disk `%s` used by running instance `%s`", n,
                            d.instance)
                continue
        unlock_data_disk(n)
        log.info("Unlocked disk `%s` (`%s`)", n, d.dir)


@disk.command("import")
@click.argument("name", metavar="DISK")
@click.argument("file", metavar="FILE")
def import_(name: str, file: str) -> None:
    """Import an existing disk to Lima.

    \b
    Example:
      $ limactl disk import DISK DISKPATH
    """
    from pylima.images.disk import import_data_disk

    import_data_disk(name, file)
