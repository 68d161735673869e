"""`limactl screenshot INSTANCE [-o FILE]`: capture the VM's display as PNG or BMP.

Lima asks its host agent, whose driver captures the display. pylima asks the
instance's driver directly (a `drivers.Screenshotter`; QEMU's works over the
instance's QMP socket, which the host agent only holds for one command at a time).
The messages are Lima's.
"""

from __future__ import annotations

import logging
import os

import click

from pylima.log import go_quote

log = logging.getLogger("pylima")


def output_format(path: str) -> str:
    """png or bmp from the output file's extension (any case), as Lima decides."""
    from pylima.errors import LimaError

    ext = os.path.splitext(path)[1]
    if ext.lower() in (".png", ".bmp"):
        return ext.lower()[1:]
    raise LimaError(f"unsupported output extension {go_quote(ext)}: must be .png or .bmp")


@click.command("screenshot", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("instance")
@click.option("-o", "--output", default="",
              help="Output file, ending in .png or .bmp (default: INSTANCE-screenshot.png)")
def screenshot(instance: str, output: str) -> None:
    """Capture a screenshot of the VM display."""
    import asyncio

    from pylima.cli.common import get_instance_or_fail
    from pylima.drivers import NoDisplayError, Screenshotter, registry
    from pylima.errors import LimaError
    from pylima.store.instance import STATUS_RUNNING

    inst = get_instance_or_fail(instance)
    if inst.status != STATUS_RUNNING:
        raise LimaError(f"instance {go_quote(instance)} is not running "
                        f"(status: {inst.status})")
    output = output or f"{instance}-screenshot.png"
    fmt = output_format(output)
    try:
        drv = registry.new_driver(inst.name, inst.dir, inst.config or {})
    except LimaError as e:
        raise LimaError(f"screenshot failed: {e.message}", e.hint) from e
    if not isinstance(drv, Screenshotter):
        raise LimaError(f"screenshot failed: driver {go_quote(inst.vm_type)}: driver does "
                        "not support screenshots")
    try:
        data = asyncio.run(drv.capture_screenshot(fmt))
    except NoDisplayError:
        raise LimaError('screenshot failed: VM has no display configured \u2014 set '
                        'video.display (e.g., "default") in the instance config') from None
    except LimaError as e:
        raise LimaError(f"screenshot failed: {e.message}", e.hint) from e
    except OSError as e:
        raise LimaError(f"screenshot failed: {e}") from e
    try:
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    except OSError as e:
        why = (e.strerror or str(e)).lower()
        raise LimaError(f"failed to write {go_quote(output)}: open {output}: {why}") from e
    log.info("Screenshot saved to %s (%d bytes)", go_quote(output), len(data))

