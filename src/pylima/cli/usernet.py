"""`limactl usernet` (internal): the daemon of a user-v2 network (the QEMU driver's:
see pylima.drivers.qemu.usernet)."""

from __future__ import annotations

import click


def _leases(_ctx: click.Context, _param: click.Parameter, value: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in filter(None, (value or "").split(",")):
        ip, sep, mac = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r} must be formatted as key=value")
        out[ip.strip()] = mac.strip()
    return out


@click.command("usernet", hidden=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-p", "--pidfile", default="", help="Write PID to file")
@click.option("-e", "--endpoint", default="", help="Exposes usernet API(s) on this endpoint "
              "(not supported by pylima)")
@click.option("--listen-qemu", default="", help="Listen for QEMU connections (the "
              "vde_switch socket directory)")
@click.option("--listen", default="", help="Listen on a Unix socket for FDs (not supported "
              "by pylima)")
@click.option("--subnet", default="192.168.5.0/24", show_default=True,
              help="Sets subnet value for the usernet network")
@click.option("--mtu", type=int, default=1500, show_default=True, help="mtu")
@click.option("--leases", default="", callback=_leases,
              help="Pass default static leases for startup, e.g. "
              "'192.168.104.15=52:55:55:b3:bc:d9'")
def usernet(pidfile: str, endpoint: str, listen_qemu: str, listen: str, subnet: str,
            mtu: int, leases: dict[str, str]) -> int:
    """Run usernet (internal)."""
    from pylima.drivers.registry import driver_class

    return int(driver_class("qemu").run_network_daemon(pidfile=pidfile, endpoint=endpoint,
                                                       listen_qemu=listen_qemu,
                                                       listen=listen, subnet=subnet, mtu=mtu,
                                                       leases=leases))
