"""`limactl create`."""

from __future__ import annotations

import logging
from typing import Any

import click

from pylima.cli.common import edit_flag_options, edit_flags_from, is_tty

log = logging.getLogger("pylima")

TTY_OPTION = click.option(
    "--tty", type=click.BOOL, default=None, is_flag=False, flag_value=True,
    help="Enable TUI interactions such as opening an editor. Defaults to true when stdout is a "
    "terminal. Set to false for automation.")
YES_OPTION = click.option("-y", "--yes", "yes", is_flag=True, help="Alias of --tty=false")
LIST_DRIVERS_OPTION = click.option("--list-drivers", is_flag=True,
                                   help="List available drivers and exit")


def echo_drivers() -> None:
    """`--list-drivers`: one driver name a line (Lima's registry.List)."""
    from pylima.drivers.registry import list_drivers

    for n in sorted(list_drivers()):
        click.echo(n)


def interactive_review(name: str, text: str) -> str | None:
    """At a terminal, let the user proceed, edit the YAML, or exit (None)."""
    choices = ["Proceed with the current configuration",
               "Open an editor to review or modify the current configuration",
               "Exit"]
    click.echo(f'? Creating an instance "{name}"', err=True)
    for i, c in enumerate(choices, 1):
        click.echo(f"  {i}) {c}", err=True)
    answer = click.prompt("Choose", type=click.IntRange(1, len(choices)), default=1,
                          err=True)
    if answer == 1:
        return text
    if answer == 2:
        edited = click.edit(text, extension=".yaml")
        if edited is None or not edited.strip():
            log.info("Aborting, as requested by saving the file with empty content")
            return None
        return edited
    return None


def do_create(arg: str | None, name: str | None, tty: bool | None, yes: bool,
              kwargs: dict[str, Any]) -> Any:
    from pylima import api
    from pylima.templates.locator import Template

    if yes:
        if tty is not None:
            raise click.UsageError("cannot use both --tty and --yes flags at the same time")
        tty = False
    if arg == "-":
        if tty:
            raise click.UsageError("cannot use --tty=true when reading template from stdin")
        tty = False
    if tty is None:
        tty = is_tty()
    source = api.resolve_create_source(arg, name)
    flags = edit_flags_from(kwargs)
    if tty:
        prepared = api.prepare_template(source, [])
        text = interactive_review(source.name, prepared.text)
        if text is None:
            return None
        source = Template(source.name, source.locator, text.encode())
    else:
        log.info("Terminal is not available, proceeding without opening an editor")
    return api.create_instance(source, flags)


@click.command("create", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("template", required=False, metavar="[FILE.yaml|URL|template:NAME]")
@click.option("--name", help="Override the instance name")
@click.option("--list-templates", is_flag=True, help="List available templates and exit")
@LIST_DRIVERS_OPTION
@TTY_OPTION
@YES_OPTION
@edit_flag_options(new_instance=True)
def create(template: str | None, name: str | None, list_templates: bool, list_drivers: bool,
           tty: bool | None, yes: bool, **kwargs: Any) -> None:
    """Create an instance of Lima.

    \b
    Examples:
      The instance "default" from the default template:
      $ limactl create
    \b
      An instance "dev" from the Debian 12 template, with 2 CPUs and 4 GiB:
      $ limactl create --name=dev --cpus=2 --memory=4 template:debian-12
    \b
      Changing the template with yq expressions:
      $ limactl create --set='.cpus = 2 | .memory = "2GiB"'
    \b
      The templates there are:
      $ limactl create --list-templates
    \b
      From a local file, or a URL (only from a source you trust):
      $ limactl create --name=mine ./mine.yaml
      $ limactl create --name=web https://example.com/templates/web.yaml
    \b
      From standard input (--name is required):
      $ cat template.yaml | limactl create --name=local -
    """

    if list_templates:
        from pylima.templates.locator import list_template_names

        for n in list_template_names():
            click.echo(n)
        return
    if list_drivers:
        echo_drivers()
        return
    inst = do_create(template, name, tty, yes, kwargs)
    if inst is not None:
        log.info("Run `limactl start %s` to start the instance.", inst.name)
