"""`limactl`: the click group, global flags and the error -> exit code boundary.

Subcommands live one module per verb and are imported only when invoked, so that
`limactl --version` and `limactl list` start fast.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from pylima.version import LIMA_COMPAT_VERSION, __version__

log = logging.getLogger("pylima")

# verb -> (module, attribute, short help); help shown without importing the module
COMMANDS: dict[str, tuple[str, str, str]] = {
    "create": ("create", "create", "Create an instance of Lima"),
    "list": ("list_cmd", "list_cmd", "List instances of Lima"),
    "delete": ("delete", "delete", "Delete an instance of Lima"),
    "protect": ("protect", "protect", "Protect an instance to prohibit accidental removal"),
    "unprotect": ("protect", "unprotect", "Unprotect an instance"),
    "clone": ("clone", "clone", "Clone an instance of Lima"),
    "rename": ("clone", "rename", "Rename an instance of Lima"),
    "edit": ("edit", "edit", "Edit an instance of Lima or a template"),
    "validate": ("validate", "validate", "Validate YAML files"),
    "template": ("template", "template", "Lima template management (EXPERIMENTAL)"),
    "info": ("info", "info", "Show diagnostic information"),
    "prune": ("prune", "prune", "Prune garbage objects"),
    "disk": ("disk", "disk", "Lima disk management"),
    "network": ("network", "network", "Lima network management"),
    "show-ssh": ("show_ssh", "show_ssh",
                 "Show the SSH command line (DEPRECATED; use `ssh -F` instead)"),
    "yq": ("yq_cmd", "yq_cmd", "Use the builtin YAML processor"),
    "completion": ("completion", "completion", "Generate the autocompletion script"),
    "start": ("start", "start", "Start an instance of Lima"),
    "restart": ("start", "restart", "Restart a running instance"),
    "stop": ("stop", "stop", "Stop an instance"),
    "shell": ("shell", "shell", "Execute shell in Lima"),
    "copy": ("copy", "copy", "Copy files between host and guest"),
    "factory-reset": ("factory_reset", "factory_reset", "Factory reset an instance of Lima"),
    "hostagent": ("hostagent_cmd", "hostagent", ""),
    "usernet": ("usernet", "usernet", ""),
    "image": ("image", "image", "Local guest images (pylima): build an offline Debian image"),
    "watch": ("watch", "watch", "Watch events from instances"),
    "screenshot": ("screenshot", "screenshot", "Capture a screenshot of the VM display"),
    "sudoers": ("sudoers", "sudoers",
                "Generate the content of the /etc/sudoers.d/lima file (macOS only)"),
    "autostart": ("autostart", "autostart", "Manage automatic startup of Lima instances"),
    "start-at-login": ("autostart", "start_at_login",
                       "Register/Unregister an autostart file for the instance (DEPRECATED)"),
    "snapshot": ("snapshot", "snapshot", "Manage instance snapshots"),
    "tunnel": ("tunnel", "tunnel", "Create a tunnel for Lima"),
    "help": ("help_cmd", "help_cmd", "Help about any command"),
    "yq-restrictions": ("help_cmd", "yq_restrictions", "Restrictions on yq expressions in Lima"),
}
HIDDEN = {"hostagent", "usernet", "yq-restrictions",  # the second is listed as a help topic
          "start-at-login"}  # deprecated: cobra hides it from the list
ALIASES = {"ls": "list", "rm": "delete", "remove": "delete", "tmpl": "template", "cp": "copy"}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        from pylima.cli.plugins import visible_plugins

        plugins = {p.name for p in visible_plugins(set(COMMANDS) | set(ALIASES))}
        return sorted((set(COMMANDS) - HIDDEN) | plugins)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        name = ALIASES.get(cmd_name, cmd_name)
        if name not in COMMANDS:
            # not a built-in: a `limactl-NAME` plugin (built-ins win, as in Lima)
            from pylima.cli.plugins import find_plugin, plugin_command

            plugin = find_plugin(cmd_name)
            return plugin_command(plugin) if plugin else None
        module, attr, _ = COMMANDS[name]
        cmd = getattr(importlib.import_module(f"pylima.cli.{module}"), attr)
        assert isinstance(cmd, click.Command)
        return cmd

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(n, COMMANDS[n][2]) for n in sorted(set(COMMANDS) - HIDDEN)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)
        from pylima.cli.plugins import visible_plugins

        plugins = visible_plugins(set(COMMANDS) | set(ALIASES))
        if plugins:
            with formatter.section("Available Plugins (Experimental)"):
                formatter.write_dl([(p.name, p.description) for p in plugins])
        from pylima.cli.help_cmd import TOPICS

        with formatter.section("Additional help topics"):
            formatter.write_dl([(f"limactl {n}", short) for n, (short, _) in TOPICS.items()])


def _version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    # The first line is exactly Lima's, for tools that parse it.
    click.echo(f"limactl version {LIMA_COMPAT_VERSION}")
    click.echo(f"pylima version {__version__}")
    ctx.exit()


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--version", is_flag=True, expose_value=False, is_eager=True,
              callback=_version,
              help="Show the version.")
@click.option("--debug", is_flag=True, help="Debug mode (tracebacks on errors).")
@click.option("--log-level", type=click.Choice(["trace", "debug", "info", "warn", "warning",
                                                "error", "fatal", "panic"]),
              help="Set the logging level [trace, debug, info, warn, error].")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="Set the logging format [text, json].")
@click.option("--tty", type=click.BOOL, default=None, is_flag=False, flag_value=True,
              help="Enable TUI interactions such as opening an editor. Defaults to true when "
              "stdout is a terminal. Set to false for automation.")
@click.option("-y", "--yes", is_flag=True, help="Alias of --tty=false")
@click.pass_context
def cli(ctx: click.Context, debug: bool, log_level: str | None, log_format: str,
        tty: bool | None, yes: bool) -> None:
    """Lima: Linux virtual machines (pylima).

    \b
    Examples:
      Start the default instance:
      $ limactl start
    \b
      Open a shell:
      $ lima
    \b
      Run a command:
      $ lima uname -a
    \b
      List instances:
      $ limactl list
    """
    from pylima import log as pylog

    pylog.setup(debug=debug, log_format=log_format)
    if log_level:
        level = {"trace": "DEBUG", "warn": "WARNING", "panic": "CRITICAL",
                 "fatal": "CRITICAL"}.get(log_level, log_level.upper())
        logging.getLogger().setLevel(level)
    if yes and tty is not None:
        raise click.UsageError("cannot use both --tty and --yes flags at the same time")
    if yes and ctx.invoked_subcommand in ("clone", "edit", "rename"):
        log.warning("--yes flag is deprecated (--tty=false is still supported and works in "
                    "the same way. Also consider using --start)")
    ctx.obj = {"debug": debug, "tty": False if yes else tty}


# Lima's persistent (global) flags: cobra takes them before or after the subcommand's
# name. click takes a group's options only before it, so `normalize_global_flags`
# moves them there, unless the subcommand declares the flag itself (create, start and
# edit have their own --tty and -y), and never past `--` or, for a subcommand that
# stops at its first argument (`shell`, at its instance name, as Lima's), past that.
GLOBAL_VALUE_FLAGS = ("--log-level", "--log-format")
GLOBAL_BOOL_FLAGS = ("--debug", "--tty", "--yes", "-y")


_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_FALSE = ("0", "f", "F", "FALSE", "false", "False")


def bool_value(arg: str, own: dict[str, bool]) -> list[str] | None:
    """cobra's `--FLAG=BOOL` for one of the command's flags (options in `own` that take
    no value), as click flags take it: [] (false), [`--FLAG`], or for a tri-state flag
    with a FALSE_PREFIX twin its explicit false. None when `arg` is not such a form."""
    from pylima.cli.common import FALSE_PREFIX

    name, eq, value = arg.partition("=")
    if not eq or not name.startswith("--") or own.get(name, True):
        return None
    if value in _TRUE:
        return [name]
    if value in _FALSE:
        twin = FALSE_PREFIX + name[2:]
        return [twin] if twin in own else []
    raise click.UsageError(f'invalid argument "{value}" for "{name}" flag: '
                           f'strconv.ParseBool: parsing "{value}": invalid syntax')


def _global_flag(arg: str) -> tuple[str, bool] | None:
    """(flag name, whether the next argument is its value) for a global flag."""
    name = arg.split("=", 1)[0]
    if name in GLOBAL_VALUE_FLAGS:
        return name, "=" not in arg
    if name in GLOBAL_BOOL_FLAGS:
        return name, False
    return None


def option_arity(cmd: click.Command) -> dict[str, bool]:
    """A command's own option names -> whether the option takes a value."""
    return {o: not p.is_flag for p in cmd.params if isinstance(p, click.Option)
            for o in (*p.opts, *p.secondary_opts)}


def normalize_global_flags(
        argv: list[str], own_flags: Callable[[str], tuple[dict[str, bool], bool]]) -> list[str]:
    """`argv` with the global flags that follow the subcommand moved before it.
    `own_flags(subcommand)`: its own options (-> whether each takes a value), and
    whether it takes options after its first argument."""
    i = 0
    while i < len(argv):  # the root's own flags, up to the subcommand
        g = _global_flag(argv[i])
        if g is None:
            if argv[i].startswith("-"):
                return argv  # --version, --help, an unknown flag: click answers
            break
        i += 2 if g[1] else 1
    if i >= len(argv):
        return argv
    sub = argv[i]
    own, interspersed = own_flags(sub)
    head, rest, moved = argv[:i], [sub], []
    j = i + 1
    while j < len(argv):
        arg = argv[j]
        if arg == "--":
            rest += argv[j:]
            break
        g = _global_flag(arg)
        if g is not None and g[0] not in own:
            n = 2 if g[1] else 1
            if g[0] in ("--debug", "--yes") and "=" in arg:
                moved += bool_value(arg, {g[0]: False}) or []
            else:
                moved += argv[j:j + n]
            j += n
            continue
        if not interspersed and not arg.startswith("-"):
            rest += argv[j:]  # its first argument: the rest is that command's
            break
        as_flag = bool_value(arg, own)
        if as_flag is not None:
            rest += as_flag
            j += 1
            continue
        n = 2 if own.get(arg) else 1  # an option of its own, with its value
        rest += argv[j:j + n]
        j += n
    return head + moved + rest


def _fatal(message: str) -> None:
    logging.getLogger("pylima").critical(message)


def run(group: click.Group, argv: list[str] | None = None, prog_name: str | None = None) -> int:
    """Invoke `group`, turning every error into one line and an exit code."""
    from pylima.errors import LimaError

    argv = sys.argv[1:] if argv is None else argv
    if group is cli:
        argv = normalize_global_flags(argv, _own_flags)
    debug = "--debug" in argv
    if not logging.getLogger().handlers:
        from pylima import log as pylog

        pylog.setup(debug=debug,
                    log_format="json" if "--log-format=json" in argv else "text")
    try:
        rv = group.main(args=argv, prog_name=prog_name, standalone_mode=False)
        return rv if isinstance(rv, int) else 0
    except LimaError as e:
        if debug:  # the traceback, for whoever debugs pylima itself
            import traceback

            log.debug("%s", traceback.format_exc().rstrip())
        msg = e.message + (f" (Hint: {e.hint})" if e.hint else "")
        _fatal(msg)
        return e.exit_code
    except click.exceptions.Abort:
        _fatal("aborted")
        return 1
    except click.NoSuchOption as e:  # cobra's words, as Lima's scripts may match them
        opt = e.option_name
        _fatal(f"unknown flag: {opt}" if opt.startswith("--") else
               f"unknown shorthand flag: '{opt[1:2]}' in {opt}")
        return 1
    except click.ClickException as e:
        _fatal(e.format_message())
        return 1
    except click.exceptions.Exit as e:
        return int(e.exit_code or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader went away (`limactl list | head`): not an error
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        except OSError:
            pass
        return 0
    except Exception as e:  # a bug: one line unless --debug
        if debug:
            raise
        _fatal(f"internal error: {type(e).__name__}: {e} (rerun with --debug for a traceback)")
        return 1


def _own_flags(name: str) -> tuple[dict[str, bool], bool]:
    """A subcommand's own options and whether it takes options after its first
    argument (its module is imported)."""
    cmd = cli.get_command(click.Context(cli), name)
    if cmd is None:
        return {}, True
    return option_arity(cmd), cmd.allow_interspersed_args


def main(argv: list[str] | None = None) -> Any:
    sys.exit(run(cli, argv, prog_name="limactl"))
