"""`limactl info`."""

from __future__ import annotations

import json
import platform
from typing import Any

import click


def lima_info() -> dict[str, Any]:
    from pylima.cli.plugins import discover
    from pylima.cli.template import filled_config
    from pylima.drivers.registry import list_drivers
    from pylima.hostinfo import host_arch
    from pylima.shellenv import DEFAULT_BLOCK_LIST
    from pylima.store import dirs
    from pylima.templates.locator import list_template_names, templates_paths
    from pylima.version import LIMA_COMPAT_VERSION, __version__

    drivers = list_drivers()
    templates = []
    for name in list_template_names():
        location = f"template:{name}"
        for base in templates_paths():
            p = base / f"{name}.yaml"
            if p.is_file():
                location = str(p)
                break
        templates.append({"name": name, "location": location})
    return {
        "version": LIMA_COMPAT_VERSION,
        "templates": templates,
        "defaultTemplate": filled_config("template:default"),
        "limaHome": str(dirs.lima_home()),
        "vmTypes": sorted(drivers),
        "vmTypesEx": {n: {"location": loc} for n, loc in sorted(drivers.items())},
        "guestAgents": {},
        "shellEnvBlock": list(DEFAULT_BLOCK_LIST),
        "hostOS": platform.system().lower(),
        "hostArch": host_arch(),
        "identityFile": str(dirs.config_dir() / dirs.USER_KEY),
        # null when there are none, as Lima's (a nil Go slice)
        "plugins": [p.to_json() for p in discover()] or None,
        "libexecPaths": [],
        "sharePaths": [],
        "pylimaVersion": __version__,
        # pylima: the guest architectures this host can run, and how (Lima has no
        # such field): "native" or "emulated" (QEMU TCG); userMode says whether the
        # host itself runs that architecture's binaries (binfmt_misc).
        "pylimaArchitectures": _architectures(),
    }


def _architectures() -> dict[str, Any]:
    from pylima.drivers.registry import driver_class

    return dict(driver_class("qemu").host_info().get("architectures") or {})


@click.command("info", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--yq", "yq_expr", default=".", help="Apply yq expression to output")
def info(yq_expr: str) -> None:
    """Show diagnostic information."""
    from pylima.config.yq import evaluate

    for r in evaluate(yq_expr, lima_info()):
        if isinstance(r, str):
            click.echo(r)
        else:
            click.echo(json.dumps(r, indent=4, ensure_ascii=False))
