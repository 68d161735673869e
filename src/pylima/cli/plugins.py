"""`limactl NAME ARGS...` for a `limactl-NAME` plugin, as Lima runs it: ARGS are
handed over untouched (global flags after NAME included), the terminal is the
plugin's, and its exit code is limactl's. A built-in command or alias of the same
name wins over it; `url-*` plugins (locator helpers) are left out of the help text.
Discovery is in pylima.plugins; it is done only when a name is not a built-in
command, for the help text and for `limactl info`.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any

from pylima.plugins import Plugin, discover, find_plugin, plugin_env

if TYPE_CHECKING:
    import click

__all__ = ["Plugin", "discover", "find_plugin", "plugin_command", "run_plugin",
           "visible_plugins"]

log = logging.getLogger("pylima")


def run_plugin(plugin: Plugin, args: list[str]) -> int:
    """Run the plugin with the terminal and `args`; its exit code (255 when a signal
    ended it, as Lima's). A plugin that cannot be started is a LimaError."""
    import signal
    import subprocess

    from pylima.errors import LimaError

    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    log.debug("running plugin %s %s", plugin.path, args)
    try:
        proc = subprocess.Popen([plugin.path, *args], env=plugin_env())
    except OSError as e:
        text = e.strerror or str(e)
        raise LimaError(f"external command `{plugin.path}` failed: fork/exec "
                        f"{plugin.path}: {text[:1].lower() + text[1:]}") from e
    # ^C goes to the plugin (same terminal process group); it decides what to do.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        rc = proc.wait()
    finally:
        signal.signal(signal.SIGINT, previous)
    return 255 if rc < 0 else rc


# ---- the click side ----

_commands: dict[Plugin, click.Command] = {}


def plugin_command(plugin: Plugin) -> click.Command:
    """A click command that hands all of its arguments to the plugin."""
    if plugin in _commands:  # click asks more than once for one command line
        return _commands[plugin]
    import click

    from pylima.cli.main import GLOBAL_BOOL_FLAGS, GLOBAL_VALUE_FLAGS

    class PluginCommand(click.Command):
        def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
            ctx.args = list(args)  # every argument is the plugin's, flags included
            return ctx.args

        def invoke(self, ctx: click.Context) -> Any:
            raise click.exceptions.Exit(run_plugin(plugin, ctx.args))

    # Declared (never parsed) so that pylima leaves Lima's global flags written after
    # the plugin's name in place, for the plugin, as Lima does.
    params: list[click.Parameter] = [
        click.Option([flag], hidden=True, is_flag=False, expose_value=False)
        for flag in (*GLOBAL_VALUE_FLAGS, *GLOBAL_BOOL_FLAGS)]
    cmd = PluginCommand(plugin.name, params=params, help=plugin.description,
                        short_help=plugin.description, hidden=plugin.hidden,
                        add_help_option=False)
    _commands[plugin] = cmd
    return cmd


def visible_plugins(builtin_names: set[str]) -> list[Plugin]:
    """Plugins for the help text: not `url-*`, not shadowed by a built-in name."""
    return [p for p in discover() if not p.hidden and p.name not in builtin_names]
