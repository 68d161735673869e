"""`limactl start` and `limactl restart`."""

from __future__ import annotations

import logging
import os
import re
from typing import Any

import click

from pylima.cli.common import edit_flag_options, edit_flags_from
from pylima.cli.create import LIST_DRIVERS_OPTION, TTY_OPTION, YES_OPTION, echo_drivers

log = logging.getLogger("pylima")

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s)")


def parse_duration(text: str) -> float:
    """Go's time.ParseDuration subset: "10m", "1h30m", "90s", "10m0s"."""
    from pylima.errors import LimaError

    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise LimaError(f'time: invalid duration "{text}"')
    return total


def _on_event(ev: dict[str, Any]) -> None:
    st = ev.get("status") or {}
    if st.get("sshLocalPort") and not st.get("running") and st.get("phase") == "booting":
        log.info("SSH Local Port: %d", st["sshLocalPort"])


def _on_progress_event(ev: dict[str, Any]) -> None:
    """`--progress`: the guest's boot log, as Lima prints it."""
    _on_event(ev)
    progress = (ev.get("status") or {}).get("cloudInitProgress")
    if not progress:
        return
    line = progress.get("logLine") or ""
    if progress.get("active") and not line:
        log.info("Cloud-init provisioning started...")
    if line:
        log.info("[cloud-init] %s", line)
    if progress.get("completed"):
        log.info("Cloud-init progress monitoring done.")


def start_instance_cli(inst: Any, timeout: float, foreground: bool, debug: bool,
                       progress: bool = False) -> int:
    from pylima import api
    from pylima.cli.progress import download_progress
    from pylima.store import dirs
    from pylima.store.instance import STATUS_RUNNING

    if inst.status == STATUS_RUNNING:
        log.info("The instance `%s` is already running. Run `%s` to open the shell.",
                 inst.name, shell_hint(inst.name))
        return 0
    if foreground:
        from pylima.hostagent.agent import main as agent_main
        from pylima.store.lock import lock

        fd = lock(inst.name)
        try:
            inst = api.prepare_start(inst, on_progress=download_progress())
        except BaseException:
            os.close(fd)
            raise
        # The host agent takes the descriptor over (and closes it).
        return agent_main(inst.name, str(inst.dir / dirs.HA_PID),
                          str(inst.dir / dirs.HA_SOCK), fd, progress)
    inst, started = api.start_or_join(
        inst, timeout, debug=debug, on_progress=download_progress(),
        on_event=_on_progress_event if progress else _on_event, progress=progress)
    if not started:
        log.info("The instance `%s` is already running. Run `%s` to open the shell.",
                 inst.name, shell_hint(inst.name))
        return 0
    log.info("READY. Run `%s` to open the shell.", shell_hint(inst.name))
    from pylima.containers.docker import setup_instance_context
    from pylima.store.instance import inspect

    inst = inspect(inst.name)
    setup_instance_context(inst)
    show_message(inst)
    return 0


def show_message(inst: Any) -> None:
    """The instance's `message` (rendered), after READY, as Lima prints it: a log line,
    then the text unprefixed on stderr, for copying and pasting."""
    import sys

    if not inst.message:
        return
    log.info("Message from the instance `%s`:", inst.name)
    sys.stderr.write(inst.message if inst.message.endswith("\n") else inst.message + "\n")
    sys.stderr.flush()


def shell_hint(name: str) -> str:
    return "lima" if name == "default" else f"limactl shell {name}"


@click.command("start", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("target", required=False, metavar="[NAME|FILE.yaml|URL]")
@click.option("--name", help="Override the instance name")
@click.option("--timeout", default="10m0s", show_default=True,
              help="Duration to wait for the instance to be running before timing out")
@click.option("--foreground", is_flag=True, help="Run the hostagent in the foreground")
@click.option("--progress", is_flag=True,
              help="Show provision script progress by tailing cloud-init logs")
@click.option("--list-templates", is_flag=True, help="List available templates and exit")
@LIST_DRIVERS_OPTION
@TTY_OPTION
@YES_OPTION
@edit_flag_options(new_instance=True)
@click.pass_context
def start(ctx: click.Context, target: str | None, name: str | None, timeout: str,
          foreground: bool, progress: bool, list_templates: bool, list_drivers: bool,
          tty: bool | None, yes: bool, **kwargs: Any) -> int:
    """Start an instance of Lima. If the instance does not exist, open an editor for
    creating new one, with name "default".

    \b
    Examples:
      $ limactl start
      $ limactl start --name=dev template:debian-12
      $ limactl start dev
    """
    from pylima import api
    from pylima.cli.create import do_create
    from pylima.config.editflags import EditFlags
    from pylima.errors import InstanceNotFound
    from pylima.store.instance import inspect

    if list_templates:
        from pylima.templates.locator import list_template_names

        for n in list_template_names():
            click.echo(n)
        return 0
    if list_drivers:
        echo_drivers()
        return 0
    seconds = parse_duration(timeout)
    flags = edit_flags_from(kwargs)
    inst_name = name or target or "default"
    existing = None
    if (target is None or _looks_like_name(target)) and not (name and target):
        try:
            existing = inspect(inst_name)
        except InstanceNotFound:
            existing = None
    if existing is not None:
        if flags != EditFlags():
            log.info("Using the existing instance `%s`", inst_name)
            api.edit_instance_with_flags(existing, flags)
            existing = inspect(inst_name)
        inst = existing
    else:
        inst = do_create(target, name, tty, yes, kwargs)
        if inst is None:
            return 0
    return start_instance_cli(inst, seconds, foreground, bool((ctx.obj or {}).get("debug")),
                              progress)


def _looks_like_name(arg: str) -> bool:
    from pylima.names import validate_instance_name

    return validate_instance_name(arg) is None


@click.command("restart", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("name", required=False, default="default", metavar="[INSTANCE]")
@click.option("-f", "--force", is_flag=True, help="Force stop and restart the instance")
@click.option("--progress", is_flag=True,
              help="Show provision script progress by tailing cloud-init logs")
@click.option("--timeout", default="10m0s", show_default=True,
              help="Duration to wait for the instance to be running before timing out")
@edit_flag_options(new_instance=False)
@click.pass_context
def restart(ctx: click.Context, name: str, force: bool, progress: bool, timeout: str,
            **kwargs: Any) -> int:
    """Restart a running instance.

    The edit flags (--cpus, --set, ...) change lima.yaml between the stop and the
    start; they are checked before the instance is stopped.
    """
    from pylima import api
    from pylima.cli.common import get_instance_or_fail
    from pylima.config.editflags import EditFlags
    from pylima.store.instance import inspect

    inst = get_instance_or_fail(name)
    flags = edit_flags_from(kwargs)
    if flags != EditFlags():
        api.check_edit_flags(inst, flags)
    seconds = parse_duration(timeout)
    api.stop_instance(inst, force=force)
    if flags != EditFlags() and api.edit_instance_with_flags(inspect(name), flags):
        log.info("Instance `%s` configuration edited", name)
    return start_instance_cli(inspect(name), seconds, False,
                              bool((ctx.obj or {}).get("debug")), progress)
