"""`limactl clone` and `limactl rename`."""

from __future__ import annotations

import logging
from typing import Any

import click

from pylima.cli.common import (
    START_OPTION,
    edit_flag_options,
    edit_flags_from,
    get_instance_or_fail,
    start_if_asked,
)

log = logging.getLogger("pylima")


@click.command("clone", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("old")
@click.argument("new")
@START_OPTION
@edit_flag_options(new_instance=False)
def clone(old: str, new: str, start: bool | None, **kwargs: Any) -> int:
    """Clone an instance of Lima (OLDINST NEWINST).

    Not to be confused with 'limactl copy' ('limactl cp').
    """
    from pylima import api

    inst = get_instance_or_fail(old)
    flags = edit_flags_from(kwargs)
    api.clone_instance(inst, new, flags)
    log.info("Cloned `%s` into `%s`", old, new)
    return start_if_asked(new, start)


@click.command("rename", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("old")
@click.argument("new")
@START_OPTION
@edit_flag_options(new_instance=False)
def rename(old: str, new: str, start: bool | None, **kwargs: Any) -> int:
    """Rename an instance of Lima (OLDINST NEWINST).

    The edit flags (--cpus, --set, ...) change the renamed instance's lima.yaml.
    """
    from pylima import api
    from pylima.config.editflags import EditFlags

    inst = get_instance_or_fail(old)
    flags = edit_flags_from(kwargs)
    if flags != EditFlags():
        api.check_edit_flags(inst, flags)  # before anything moves
    renamed = api.rename_instance(inst, new)
    log.info("Renamed `%s` to `%s`", old, new)
    if flags != EditFlags() and api.edit_instance_with_flags(renamed, flags):
        log.info("Instance `%s` configuration edited", new)
    return start_if_asked(new, start)
