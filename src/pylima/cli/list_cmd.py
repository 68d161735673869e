"""`limactl list` (the click front; the work is in `listing`)."""

from __future__ import annotations

from typing import Any

import click

from pylima.cli.listing import LIST_HELP, run_list


@click.command("list", help=LIST_HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("instances", nargs=-1, metavar="[INSTANCE]...")
@click.option("-f", "--format", "fmt", default=None,
              help="Output format, one of: json, yaml, table, go-template  [default: table]")
@click.option("--list-fields", is_flag=True, help="List fields available for format")
@click.option("--json", "json_", is_flag=True, help="Same as --format=json")
@click.option("-q", "--quiet", is_flag=True, help="Only show names")
@click.option("--all-fields", is_flag=True, help="Show all fields")
@click.option("--yq", "yq_exprs", multiple=True, help="Apply yq expression to each instance")
@click.option("-l", "--filter", "filters", multiple=True,
              help="Filter instances using yq expression (equivalent to --yq 'select(EXPR)')")
def list_cmd(**kwargs: Any) -> int:
    return run_list(**kwargs)
