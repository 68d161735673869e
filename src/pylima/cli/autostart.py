"""`limactl autostart enable|disable INSTANCE` and the deprecated `limactl
start-at-login`: start an instance when the user logs in (a systemd user unit on
Linux, see pylima.autostart). The messages are Lima's (on Linux)."""

from __future__ import annotations

import logging
import sys

import click

from pylima.cli.common import tri_flag

log = logging.getLogger("pylima")

DEFAULT_INSTANCE = "default"


def _inspect(name: str) -> object | None:
    """The instance, or None when it does not exist (no directory or no lima.yaml)."""
    from pylima.errors import InstanceNotFound
    from pylima.store import dirs
    from pylima.store.instance import inspect

    try:
        inst = inspect(name)
    except InstanceNotFound:
        return None
    return inst if (inst.dir / dirs.LIMA_YAML).exists() else None


def _require(name: str) -> None:
    from pylima.errors import InstanceNotFound

    if _inspect(name) is None:
        raise InstanceNotFound(f'instance "{name}" not found')


@click.group("autostart", context_settings={"help_option_names": ["-h", "--help"]})
def autostart() -> None:
    """Manage automatic startup of Lima instances.

    On Linux an instance is started when the user logs in, by a systemd user unit
    (lima-vm@INSTANCE.service in ~/.config/systemd/user); this needs systemd to be
    the running init.
    """


@autostart.command("enable")
@click.argument("instance")
@click.option("--condition", default="login", show_default=True,
              help='When to start the instance: "login" (user session) or "boot" '
              "(system boot, macOS only)")
@click.option("--user", default="",
              help="macOS username to run the instance as when --condition=boot "
              "(default: $USER)")
def enable(instance: str, condition: str, user: str) -> None:
    """Register an instance to start automatically."""
    from pylima import autostart as auto
    from pylima.errors import LimaError

    if condition == "boot":
        raise LimaError("--condition=boot is only supported on macOS")
    if condition != "login":
        raise LimaError(f'unknown condition "{condition}": must be "login" or "boot"')
    if user:
        log.warning("--user is only used with --condition=boot (macOS); ignoring it")
    _require(instance)
    try:
        auto.register(instance)
    except auto.AutostartError as e:
        raise LimaError(f"failed to register instance `{instance}` to start at login: "
                        f"{e.message}") from e
    log.info("Instance `%s` registered to start at login", instance)


@autostart.command("disable")
@click.argument("instance")
def disable(instance: str) -> None:
    """Unregister an instance from automatic startup."""
    from pylima import autostart as auto
    from pylima.errors import LimaError

    _require(instance)
    if not auto.is_registered(instance):
        log.info("Instance `%s` is not registered for automatic startup", instance)
        return
    try:
        auto.unregister(instance)
    except auto.AutostartError as e:
        raise LimaError(f"failed to unregister instance `{instance}` from start at login: "
                        f"{e.message}") from e
    log.info("Instance `%s` unregistered from start at login", instance)


@click.command("start-at-login", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("instance", required=False)
@tri_flag("--enabled", help="Automatically start the instance when the user logs in "
          "[default: true]")
def start_at_login(instance: str | None, enabled: bool | None) -> None:
    """Register/Unregister an autostart file for the instance.

    Deprecated: use `limactl autostart` instead.
    """
    from pylima import autostart as auto
    from pylima.errors import LimaError

    # cobra's notice for a deprecated command (plain text on stderr)
    sys.stderr.write('Command "start-at-login" is deprecated, use "limactl autostart" '
                     "instead\n")
    sys.stderr.flush()
    name = instance or DEFAULT_INSTANCE
    if _inspect(name) is None:
        log.info("Instance `%s` not found", name)
        return
    try:
        registered = auto.is_registered(name)
    except auto.AutostartError as e:
        raise LimaError(f"failed to check if the autostart entry for instance `{name}` is "
                        f"registered: {e.message}") from e
    if enabled is None or enabled:
        verb = "update" if registered else "create"
        try:
            auto.register(name)
        except auto.AutostartError as e:
            raise LimaError(f"failed to {verb} the autostart entry for instance `{name}`: "
                            f"{e.message}") from e
        log.info("The autostart entry for instance `%s` has been %sd", name, verb)
    elif not registered:
        log.info("The autostart entry for instance `%s` is not registered", name)
    else:
        try:
            auto.unregister(name)
        except auto.AutostartError as e:
            raise LimaError(f"failed to unregister the autostart entry for instance "
                            f"`{name}`: {e.message}") from e
        log.info("The autostart entry for instance `%s` has been unregistered", name)
