"""`limactl image build` (pylima only): build a bootable Debian image locally from
the host's apt mirror, for hosts that cannot download cloud images."""

from __future__ import annotations

import logging
import time

import click

log = logging.getLogger("pylima")

SUITES = {"debian-12": "bookworm"}


@click.group("image", context_settings={"help_option_names": ["-h", "--help"]})
def image() -> None:
    """Local guest images (pylima): build an offline Debian image."""


@image.command("build")
@click.argument("name", required=False, default="debian-12", metavar="[debian-12]")
@click.option("--arch", default=None, help="Guest architecture (x86_64, aarch64)")
@click.option("--mirror", default=None,
              help="Debian mirror URL (default: the one the host's apt sources name, "
              "or $PYLIMA_DEBIAN_MIRROR)")
@click.option("--force", is_flag=True, help="Rebuild even when a cached image exists")
@click.option("--variant", default="", metavar="NAME",
              help="Bake extra packages in (a named variant of the base image)")
def build(name: str, arch: str | None, mirror: str | None, force: bool,
          variant: str) -> None:
    """Build (once; cached) a bootable Debian cloud-style image.

    Instances created from template:default or template:debian-12 use it when no
    cloud image can be downloaded. It prints the image's `images:` entry (JSON), so
    that it can be used explicitly:

    \b
      limactl create --set ".images = [$(limactl image build)]"
    """
    import pylima.images.builder as builder
    from pylima.errors import LimaError
    from pylima.hostinfo import host_arch

    if name not in SUITES:
        raise LimaError(f"unknown image `{name}`", hint=f"one of: {', '.join(SUITES)}")
    arch = arch or host_arch()
    builder.variant_packages(variant)  # an unknown variant fails before anything runs
    ok, why = builder.can_build(arch)
    if not ok and not force and builder.find_cached_image(arch, SUITES[name],
                                                                  variant=variant) is None:
        raise LimaError(f"cannot build the image here: {why}")
    t0 = time.monotonic()
    img = builder.build_debian_image(arch, SUITES[name], mirror, force=force,
                                     variant=variant, on_phase=lambda p: log.info("%s", p))
    log.info("Image `%s` (%s) ready in %.0f s: %s", name, arch, time.monotonic() - t0,
             img.disk)
    import json

    click.echo(json.dumps(builder.images_entry(img)))
