"""`limactl tunnel [flags] INSTANCE`: a SOCKS5 proxy into the guest's network.

Lima's command (experimental, it says so): `--type socks` (the only type), `--socks-port`
0 for a free port or 1024-65535, flags before the instance name. As in Lima the proxy
is a dynamic forward on the instance's SSH connection and the command returns once it
is up, printing how to use it; pylima opens it on the host agent's SSH master
(`ssh -O forward -D`), so it ends when the instance stops.
"""

from __future__ import annotations

import logging

import click

log = logging.getLogger("pylima")

USE = "limactl tunnel [flags] INSTANCE"
SHORT = "Create a tunnel for Lima"


def instructions(port: int, hostname: str) -> str:
    """What Lima prints on a Linux host once the tunnel is up."""
    return (f"Set `ALL_PROXY=socks5h://127.0.0.1:{port}`, etc.\n"
            f"The instance can be connected from the host as <http://{hostname}.internal> "
            "via a web browser.\n")


def parse_go_int(value: str, flag: str) -> int:
    """An int flag's value as cobra (strconv.ParseInt, base 0) takes it, with its
    message for a bad one."""
    try:
        return int(value, 0)
    except ValueError:
        raise click.UsageError(f'invalid argument "{value}" for "{flag}" flag: '
                               f'strconv.ParseInt: parsing "{value}": invalid syntax'
                               ) from None


@click.command("tunnel", context_settings={"help_option_names": ["-h", "--help"],
                                           "allow_interspersed_args": False})
@click.argument("args", nargs=-1, metavar="INSTANCE")
@click.option("--type", "tunnel_type", default="socks", show_default=True,
              help='Tunnel type, currently only "socks" is implemented')
@click.option("--socks-port", "socks_port_arg", default="0", metavar="INTEGER",
              help="SOCKS port, defaults to a random port")
def tunnel(args: tuple[str, ...], tunnel_type: str, socks_port_arg: str) -> None:
    """Create a tunnel for Lima.

    Create a SOCKS tunnel so that the host can join the guest network.
    """
    from pylima import api
    from pylima.errors import InstanceNotFound, LimaError
    from pylima.store.instance import inspect

    log.warning("`limactl tunnel` is experimental")
    if len(args) != 1:
        raise LimaError(f"`limactl tunnel` accepts 1 arg(s), received {len(args)}. "
                        f"See `limactl tunnel --help`.", hint=f"usage: {USE}")
    socks_port = parse_go_int(socks_port_arg, "--socks-port")
    if tunnel_type != "socks":
        raise LimaError(f"unknown tunnel type: `{tunnel_type}`")
    api.check_socks_port(socks_port)
    name = args[0]
    try:
        inst = inspect(name)
    except InstanceNotFound as e:
        raise InstanceNotFound(f"instance `{name}` does not exist, run `limactl create "
                               f"{name}` to create a new instance") from e
    port = api.open_socks_tunnel(inst, socks_port)
    click.echo(instructions(port, inst.hostname), nl=False)
