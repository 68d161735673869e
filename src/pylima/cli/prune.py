"""`limactl prune`."""

from __future__ import annotations

import logging

import click

log = logging.getLogger("pylima")


@click.command("prune", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--keep-referred", is_flag=True,
              help="Keep objects that are referred by some instances or templates")
def prune(keep_referred: bool) -> None:
    """Prune garbage objects (the download cache).

    Instances keep working: their base images are hard links or copies, not
    references into the cache.
    """
    from pylima.config.units import format_size
    from pylima.images.prune import locations_from_config, prune_cache

    referenced: set[str] | None = None
    if keep_referred:
        from pylima.cli.template import filled_config
        from pylima.errors import LimaError
        from pylima.store.instance import inspect, instance_names
        from pylima.templates.locator import list_template_names

        referenced = set()
        for name in instance_names():
            inst = inspect(name)
            if inst.errors or inst.config is None:
                log.warning("skipping instance `%s` because it has errors: %s", name,
                            inst.errors)
                continue
            referenced |= locations_from_config(inst.config)
        for tmpl in list_template_names():
            try:
                referenced |= locations_from_config(filled_config(f"template:{tmpl}"))
            except LimaError as e:
                log.warning("skipping template `%s`: %s", tmpl, e.message)
    result = prune_cache(referenced)
    log.debug("pruned %d cache entries", len(result.removed))
    if result.bytes_freed:
        log.info("Freed %s", format_size(result.bytes_freed))
