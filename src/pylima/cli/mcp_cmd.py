"""`limactl-mcp` (run as `limactl mcp`): the Model Context Protocol plugin, with Lima
v2.2.0's commands: `serve [INSTANCE]` (MCP over stdio, for an AI agent), `info` (the
tools as JSON) and `-v`. The MCP SDK is imported by `serve` alone, and never by
`limactl` or `lima`."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from pylima.version import LIMA_COMPAT_VERSION


@click.group("limactl-mcp", context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(LIMA_COMPAT_VERSION, "-v", "--version",
                      message="limactl-mcp version %(version)s")
@click.option("--debug", is_flag=True, help="Debug mode")
def mcp_cli(debug: bool) -> None:
    """Model Context Protocol plugin for Lima (EXPERIMENTAL)"""


@mcp_cli.command("info")
def info() -> None:
    """Show information about the MCP server"""
    from pylima.mcpserver.tools import TOOLS

    sys.stdout.write(json.dumps({"tools": TOOLS}, indent=4, ensure_ascii=False))


@mcp_cli.command("serve")
@click.option("--timeout", "timeout", default="10m", show_default=True,
              help="Time limit of one run_shell_command call (the command is killed)")
@click.argument("instance", required=False, default="default")
def serve(timeout: str, instance: str) -> None:
    """Serve MCP over stdio.

    Expected to be executed via an AI agent, not by a human
    """
    from pylima.cli.start import parse_duration
    from pylima.errors import InstanceError, InstanceNotFound
    from pylima.log import with_fields  # noqa: F401 - the log set-up is run's
    from pylima.store.instance import STATUS_RUNNING, inspect

    limit = parse_duration(timeout)
    try:
        inst = inspect(instance)
    except InstanceNotFound as e:
        raise InstanceNotFound(f"instance `{instance}` does not exist, run `limactl create "
                               f"{instance}` to create a new instance") from e
    if inst.errors:
        raise InstanceError("; ".join(inst.errors))
    if inst.status != STATUS_RUNNING:
        raise InstanceError(f"expected status of instance `{instance}` to be `Running`, "
                            f"got `{inst.status}`")
    assert inst.config is not None
    import logging

    if not inst.config.get("mounts"):
        # the tools act on the guest's files: none of them is a host file
        logging.getLogger("pylima").warning("instance `%s` has no mount", instance)
    from pylima.mcpserver.guest import Guest
    from pylima.mcpserver.server import serve as serve_stdio

    serve_stdio(Guest(inst.dir, instance, inst.config, limit))


@mcp_cli.command("generate-doc", hidden=True)
@click.argument("directory", metavar="DIR")
@click.argument("rest", nargs=-1)
def generate_doc(directory: str, rest: tuple[str, ...]) -> None:
    """Generate documentation pages"""
    import os

    from pylima.mcpserver.tools import TOOLS

    os.makedirs(directory, exist_ok=True)
    parts = ["---\ntitle: MCP tools\nweight: 99\n---\n",
             "The tools of `limactl mcp serve`, which act inside the instance.\n\n"]
    for t in TOOLS:
        parts.append(f"## `{t['name']}`\n\n### Description\n\n{t['description']}\n\n")
        for title, key in (("Input Schema", "inputSchema"), ("Output Schema", "outputSchema")):
            parts.append(f"### {title}\n\n```json\n{json.dumps(t[key], indent=4)}\n```\n\n")
    with open(os.path.join(directory, "mcp.md"), "w") as f:
        f.write("".join(parts))


def main(argv: list[str] | None = None) -> Any:
    from pylima.cli.main import run

    sys.exit(run(mcp_cli, argv, prog_name="limactl-mcp"))
