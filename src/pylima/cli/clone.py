"""`limactl clone` and `limactl rename`."""

from __future__ import annotations

import logging
from typing import Any

import click

from pylima.cli.common import edit_flag_options, edit_flags_from, get_instance_or_fail

log = logging.getLogger("pylima")


@click.command("clone", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("old")
@click.argument("new")
@edit_flag_options(new_instance=False)
def clone(old: str, new: str, **kwargs: Any) -> None:
    """Clone an instance of Lima (OLDINST NEWINST).

    Not to be confused with 'limactl copy' ('limactl cp').
    """
    from pylima import api

    inst = get_instance_or_fail(old)
    flags = edit_flags_from(kwargs)
    api.clone_instance(inst, new, flags)
    log.info("Cloned `%s` into `%s`", old, new)


@click.command("rename", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("old")
@click.argument("new")
def rename(old: str, new: str) -> None:
    """Rename an instance of Lima (OLDINST NEWINST)."""
    from pylima import api

    inst = get_instance_or_fail(old)
    api.rename_instance(inst, new)
    log.info("Renamed `%s` to `%s`", old, new)
