"""Helpers shared by several commands (terminal detection, instance lookup, flags)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from pylima.errors import InstanceNotFound


def is_tty(stream: Any = None) -> bool:
    """Whether to interact (an editor, prompts): the global `--tty`/`-y` when given,
    else whether stdout (or `stream`) is a terminal, as Lima's default."""
    if stream is None:
        import click

        ctx = click.get_current_context(silent=True)
        chosen = ((ctx.find_root().obj or {}).get("tty") if ctx is not None else None)
        if chosen is not None:
            return bool(chosen)
    stream = stream or sys.stdout
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def get_instance_or_fail(name: str) -> Any:
    from pylima.store.instance import inspect

    try:
        return inspect(name)
    except InstanceNotFound as e:
        raise InstanceNotFound(f"instance `{name}` does not exist, run `limactl create "
                               f"--name={name}` to create a new instance") from e


def edit_flag_options(new_instance: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The template-editing flags shared by create, start, edit and clone (Lima's editflags)."""
    opts = [
        click.option("--cpus", type=int, help="Number of CPUs"),
        click.option("--memory", type=float, help="Memory in GiB"),
        click.option("--disk", type=float, help="Disk size in GiB"),
        click.option("--mount", multiple=True,
                     help="Directories to mount, suffix ':w' for writable"),
        click.option("--mount-only", multiple=True,
                     help="Similar to --mount, but overrides the existing mounts"),
        click.option("--mount-none", is_flag=True, default=None, help="Remove all mounts"),
        click.option("--mount-type", help="Mount type (reverse-sshfs, 9p, virtiofs)"),
        click.option("--mount-writable", is_flag=True, default=None,
                     help="Make all mounts writable"),
        click.option("--mount-inotify", is_flag=True, default=None,
                     help="Enable inotify for mounts"),
        click.option("--dns", multiple=True,
                     help="Specify custom DNS (disable host resolver)"),
        click.option("--network", multiple=True,
                     help='Additional networks, e.g., "vzNAT" or "lima:shared"'),
        click.option("--nested-virt", is_flag=True, default=None,
                     help="Enable nested virtualization"),
        click.option("--rosetta", is_flag=True, default=None,
                     help="Enable Rosetta (for vz instances)"),
        click.option("--set", "set_", multiple=True,
                     help="Modify the template inplace, using yq syntax. Can be passed "
                     "multiple times."),
        click.option("--param", multiple=True,
                     help="Set a template parameter, e.g. name=value. Can be passed multiple "
                     "times."),
        click.option("--ssh-port", type=int, help="SSH port (0 for random)"),
        click.option("--video", is_flag=True, default=None,
                     help="Enable video output (has negative performance impact for QEMU)"),
        click.option("--shell", "user_shell",
                     help="User login shell in the guest (e.g. /bin/bash, /bin/zsh)"),
    ]
    if new_instance:
        opts += [
            click.option("--arch",
                         help="Machine architecture (x86_64, aarch64, riscv64, armv7l, s390x, "
                         "ppc64le)"),
            click.option("--vm-type", help="Virtual machine type (qemu, vz, wsl2)"),
            click.option("--containerd",
                         help="containerd mode (user, system, user+system, none)"),
            click.option("--plain", is_flag=True, default=None,
                         help="Plain mode. Disables mounts, port forwarding, containerd, etc."),
            click.option("--port-forward", multiple=True,
                         help="Port forwards (host:guest), e.g., '8080:80' or "
                         "'9090:9090,static=true' for static port-forwards"),
        ]

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        for opt in reversed(opts):
            f = opt(f)
        return f
    return decorate


def edit_flags_from(kwargs: dict[str, Any]) -> Any:
    from pylima.config.editflags import EditFlags

    return EditFlags(
        cpus=kwargs.get("cpus"), memory=kwargs.get("memory"), disk=kwargs.get("disk"),
        arch=kwargs.get("arch"), vm_type=kwargs.get("vm_type"),
        mount=kwargs.get("mount") or (), mount_only=kwargs.get("mount_only") or (),
        mount_none=bool(kwargs.get("mount_none")), mount_type=kwargs.get("mount_type"),
        mount_writable=kwargs.get("mount_writable"), mount_inotify=kwargs.get("mount_inotify"),
        dns=kwargs.get("dns") or (), network=kwargs.get("network") or (),
        nested_virt=kwargs.get("nested_virt"), rosetta=kwargs.get("rosetta"),
        plain=kwargs.get("plain"), containerd=kwargs.get("containerd"),
        port_forward=kwargs.get("port_forward") or (), ssh_port=kwargs.get("ssh_port"),
        video=kwargs.get("video"), shell=kwargs.get("user_shell"),
        param=kwargs.get("param") or (), set=tuple(kwargs.get("set_") or ()),
    )
