"""`limactl stop`."""

from __future__ import annotations

import logging

import click

log = logging.getLogger("pylima")


@click.command("stop", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("name", required=False, default="default", metavar="[INSTANCE]")
@click.option("-f", "--force", is_flag=True, help="Force stop the instance")
def stop(name: str, force: bool) -> None:
    """Stop an instance."""
    from pylima import api
    from pylima.cli.common import get_instance_or_fail
    from pylima.store.instance import STATUS_STOPPED

    inst = get_instance_or_fail(name)
    if inst.status == STATUS_STOPPED and not force:
        log.warning("The instance `%s` is not running", name)
        return
    if force:
        log.info("Forcibly stopping the instance `%s`", name)
    else:
        log.info("Sending SIGTERM to hostagent process %d", inst.host_agent_pid)
        log.info("Waiting for the host agent and the driver processes to shut down")
    api.stop_instance(inst, force=force)
    log.info("The instance `%s` is stopped", name)
