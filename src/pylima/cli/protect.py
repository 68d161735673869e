"""`limactl protect` and `limactl unprotect`."""

from __future__ import annotations

import logging

import click

log = logging.getLogger("pylima")


def _each(names: tuple[str, ...], verb: str) -> None:
    from pylima import api
    from pylima.errors import LimaError
    from pylima.store.instance import inspect

    errors = []
    for name in names:
        try:
            inst = inspect(name)
        except LimaError as e:
            errors.append(f"failed to inspect instance `{name}`: {e.message}")
            continue
        if verb == "protect":
            if api.protect_instance(inst):
                log.info("Protected `%s`", name)
            else:
                log.warning("Instance `%s` is already protected. Skipping.", name)
        else:
            if api.unprotect_instance(inst):
                log.info("Unprotected `%s`", name)
            else:
                log.warning("Instance `%s` isn't protected. Skipping.", name)
    if errors:
        raise LimaError("; ".join(errors))


@click.command("protect", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("instances", nargs=-1, required=True, metavar="INSTANCE [INSTANCE, ...]")
def protect(instances: tuple[str, ...]) -> None:
    """Protect an instance to prohibit accidental removal.

    The instance is not being protected against removal via `/bin/rm`, Finder, etc.
    """
    _each(instances, "protect")


@click.command("unprotect", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("instances", nargs=-1, required=True, metavar="INSTANCE [INSTANCE, ...]")
def unprotect(instances: tuple[str, ...]) -> None:
    """Unprotect an instance."""
    _each(instances, "unprotect")
