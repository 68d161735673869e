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


# cobra's boolean flags take a value too (`--start=false`, `--video=true`). click's
# do not: `normalize_global_flags` (cli/main.py) turns `--NAME=true` into `--NAME` and
# `--NAME=false` into this hidden secondary name, so that an explicit false reaches the
# command as False (a tri-state flag: None when not given).
FALSE_PREFIX = "--pylima-false-"


class TriBoolOption(click.Option):
    """A flag that is None, True or (with `--NAME=false`) False; help shows `--NAME`."""

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        saved, self.secondary_opts = self.secondary_opts, []
        try:
            return super().get_help_record(ctx)
        finally:
            self.secondary_opts = saved


def tri_flag(name: str, help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(f"{name}/{FALSE_PREFIX}{name[2:]}", default=None, cls=TriBoolOption,
                        help=help)


def edit_flag_options(new_instance: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The template-editing flags shared by create, start, edit and clone (Lima's editflags)."""
    opts: list[Callable[[Callable[..., Any]], Callable[..., Any]]] = [
        click.option("--cpus", type=int, help="Number of CPUs"),
        click.option("--memory", type=float, help="Memory in GiB"),
        click.option("--disk", type=float, help="Disk size in GiB"),
        click.option("--mount", multiple=True,
                     help="Directories to mount, suffix ':w' for writable"),
        click.option("--mount-only", multiple=True,
                     help="Similar to --mount, but overrides the existing mounts"),
        tri_flag("--mount-none", help="Remove all mounts"),
        click.option("--mount-type", help="Mount type (reverse-sshfs, 9p, virtiofs)"),
        tri_flag("--mount-writable", help="Make all mounts writable"),
        tri_flag("--mount-inotify", help="Enable inotify for mounts"),
        click.option("--dns", multiple=True,
                     help="Specify custom DNS (disable host resolver)"),
        click.option("--network", multiple=True,
                     help='Additional networks, e.g., "vzNAT" or "lima:shared"'),
        tri_flag("--nested-virt", help="Enable nested virtualization"),
        tri_flag("--rosetta", help="Enable Rosetta (for vz instances)"),
        click.option("--set", "set_", multiple=True,
                     help="Modify the template inplace, using yq syntax. Can be passed "
                     "multiple times."),
        click.option("--param", multiple=True,
                     help="Set a template parameter, e.g. name=value. Can be passed multiple "
                     "times."),
        click.option("--ssh-port", type=int, help="SSH port (0 for random)"),
        tri_flag("--video", help="Enable video output (has negative performance impact for QEMU)"),
        click.option("--shell", "user_shell",
                     help="User login shell in the guest (e.g. /bin/bash, /bin/zsh)"),
        click.option("--vm-type", help="Virtual machine type (qemu, vz, wsl2)"),
    ]
    if new_instance:
        opts += [
            click.option("--arch",
                         help="Machine architecture (x86_64, aarch64, riscv64, armv7l, s390x, "
                         "ppc64le)"),
            click.option("--image-variant", help="Image variant"),
            click.option("--containerd",
                         help="containerd mode (user, system, user+system, none)"),
            tri_flag("--plain",
                     help="Plain mode. Disables mounts, port forwarding, containerd, etc."),
            click.option("--port-forward", multiple=True,
                         help="Port forwards (host:guest), e.g., '8080:80' or "
                         "'9090:9090,static=true' for static port-forwards"),
            click.option("--audio-device",
                         help="Audio device backend (e.g., 'pa', 'coreaudio', 'none')"),
            click.option("--audio-interface",
                         help="Audio virtual hardware interface ('hda' or 'virtio')"),
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
        image_variant=kwargs.get("image_variant"), audio_device=kwargs.get("audio_device"),
        audio_interface=kwargs.get("audio_interface"),
        param=kwargs.get("param") or (), set=tuple(kwargs.get("set_") or ()),
    )


START_OPTION = tri_flag("--start", help="Start the instance afterwards")


def start_if_asked(name: str, start: bool | None, tty: bool | None = None) -> int:
    """Lima's `--start` on edit, clone and rename: start `name` when asked; without the
    flag, at a terminal (stdin too), ask whether to."""
    if start is None:
        start = False
        if (tty if tty is not None else is_tty()) and sys.stdin.isatty():
            start = click.confirm("Do you want to start the instance now?", default=True)
    if not start:
        return 0
    from pylima.cli.start import parse_duration, start_instance_cli
    from pylima.store.instance import inspect

    ctx = click.get_current_context(silent=True)
    debug = bool(((ctx.find_root().obj if ctx else None) or {}).get("debug"))
    return start_instance_cli(inspect(name), parse_duration("10m0s"), False, debug)
