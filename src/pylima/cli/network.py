"""`limactl network list|create|delete`: the named networks of `_config/networks.yaml`."""

from __future__ import annotations

import json
import logging

import click

log = logging.getLogger("pylima")


@click.group("network", context_settings={"help_option_names": ["-h", "--help"]})
def network() -> None:
    """Lima network management.

    \b
    Example:
      List all networks:
      $ limactl network list

    \b
      Create a network:
      $ limactl network create foo --gateway 192.168.42.1/24

    \b
      Connect VM instances to the newly created network:
      $ limactl create --network lima:foo --name vm1
      $ limactl create --network lima:foo --name vm2

    \b
      Delete a network:
      $ limactl network delete --force foo
    """


@network.command("list")
@click.argument("names", nargs=-1)
@click.option("--json", "json_", is_flag=True, help="JSONify output")
def list_(names: tuple[str, ...], json_: bool) -> None:
    """List networks.

    \b
    Example:
      List all networks:
      $ limactl network list

    \b
      List networks in JSON format:
      $ limactl network list --json
    """
    from pylima.cli.listing import tabwrite
    from pylima.store.networks import gateway_cidr, load_networks, network_json

    nets = load_networks()["networks"]
    shown = sorted(nets)
    if names:
        shown = []
        for n in names:
            if n in nets:
                shown.append(n)
            else:
                log.warning("No network matching %s found.", n)
    if json_:
        for n in shown:
            click.echo(json.dumps(network_json(n, nets[n] or {}), separators=(",", ":")))
        return
    rows = [["NAME", "MODE", "GATEWAY", "INTERFACE"]]
    for n in shown:
        nw = nets[n] or {}
        rows.append([n, str(nw.get("mode") or ""), gateway_cidr(nw),
                     str(nw.get("interface") or "-")])
    click.echo(tabwrite(rows), nl=False)


network.add_command(list_, "ls")


@network.command("create")
@click.argument("name", metavar="NETWORK")
@click.option("--mode", default="user-v2", show_default=True, help="mode")
@click.option("--gateway", default="", help='gateway, e.g., "192.168.42.1/24"')
@click.option("--interface", default="", help="interface for bridged mode")
def create(name: str, mode: str, gateway: str, interface: str) -> None:
    """Create a Lima network.

    \b
    Example:
      Create a network:
      $ limactl network create foo --gateway 192.168.42.1/24

    \b
      Connect VM instances to the newly created network:
      $ limactl create --network lima:foo --name vm1
      $ limactl create --network lima:foo --name vm2
    """
    from pylima.store.networks import create_network

    create_network(name, mode, gateway, interface)


@network.command("delete")
@click.argument("names", nargs=-1, required=True, metavar="NETWORK [NETWORK, ...]")
@click.option("-f", "--force", is_flag=True, help="Force delete (currently always required)")
def delete(names: tuple[str, ...], force: bool) -> None:
    """Delete one or more Lima networks.

    \b
    Example:
      Delete a network:
      $ limactl network delete --force foo

    \b
      Delete multiple networks:
      $ limactl network delete --force foo bar
    """
    from pylima.errors import LimaError
    from pylima.store.networks import delete_networks

    if not force:
        raise LimaError("`limactl network delete` currently always requires `--force`")
    delete_networks(list(names))


network.add_command(delete, "remove")
network.add_command(delete, "rm")
