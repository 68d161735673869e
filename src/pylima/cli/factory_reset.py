"""`limactl factory-reset`."""

from __future__ import annotations

import logging

import click

log = logging.getLogger("pylima")

# What an instance keeps across a factory reset: its configuration and identity.
_KEEP = {"lima.yaml", "lima-version", "protected"}


@click.command("factory-reset", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("name", required=False, default="default", metavar="[INSTANCE]")
def factory_reset(name: str) -> None:
    """Factory reset an instance of Lima: stop it and remove its disk and runtime files,
    keeping lima.yaml."""
    import shutil

    from pylima import api
    from pylima.cli.common import get_instance_or_fail
    from pylima.store.lock import instance_lock

    inst = get_instance_or_fail(name)
    api.stop_instance(inst, force=True)
    with instance_lock(name):
        for entry in list(inst.dir.iterdir()):
            if entry.name in _KEEP:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    log.info("Instance `%s` has been reset", name)
