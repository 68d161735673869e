"""networks.yaml and `networks[].lima` validation, with Lima's messages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def limactl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pylima", *args], capture_output=True,
                          text=True, timeout=60)


def test_named_networks_are_checked_against_networks_yaml(lima_home: Path,
                                                          tmp_path: Path) -> None:
    y = tmp_path / "n.yaml"
    y.write_text("images: [{location: /etc/profile}]\nnetworks: [{lima: nope}]\n")
    r = limactl("validate", str(y))
    assert r.returncode == 1 and ("field `networks[0].lima` references network `nope` "
                                  "which is not defined in networks.yaml") in r.stderr
    nets = (lima_home / "_config" / "networks.yaml").read_text()  # written, as Lima
    assert "user-v2:\n    mode: user-v2\n    gateway: 192.168.104.1" in nets
    y.write_text("images: [{location: /etc/profile}]\nnetworks: [{lima: shared}]\n")
    r = limactl("create", "--name=n", str(y))
    assert r.returncode == 1
    assert "field `networks[0].lima` is only supported on macOS right now" in r.stderr
    assert not (lima_home / "n").exists()
    y.write_text("images: [{location: /etc/profile}]\nnetworks: [{lima: user-v2}]\nfoo: 1\n")
    r = limactl("validate", str(y))
    assert r.returncode == 0, r.stderr
    assert "Non-strict YAML detected; please check for typos: unknown field `foo`" in r.stderr


def test_network_list_shows_lima_defaults(lima_home: Path) -> None:
    r = limactl("network", "list")
    assert r.returncode == 0, r.stderr
    assert r.stdout == (
        "NAME       MODE       GATEWAY             INTERFACE\n"
        "bridged    bridged    -                   en0\n"
        "host       host       192.168.106.1/24    -\n"
        "shared     shared     192.168.105.1/24    -\n"
        "user-v2    user-v2    192.168.104.1/24    -\n")
    r = limactl("network", "ls", "--json", "user-v2", "bridged", "nope")
    assert r.returncode == 0
    assert r.stdout.splitlines() == [
        '{"name":"user-v2","mode":"user-v2","gateway":"192.168.104.1",'
        '"netmask":"255.255.255.0"}',
        '{"name":"bridged","mode":"bridged","interface":"en0"}']
    assert "No network matching nope found." in r.stderr


def test_network_create_and_delete(lima_home: Path) -> None:
    r = limactl("network", "create", "foo", "--gateway", "192.168.42.1/24")
    assert r.returncode == 0, r.stderr
    text = (lima_home / "_config" / "networks.yaml").read_text()
    assert text.startswith("# Named networks")  # comments kept
    assert "  foo:\n    mode: user-v2\n    gateway: 192.168.42.1\n" \
           "    netmask: 255.255.255.0\n" in text
    r = limactl("network", "list", "--json", "foo")
    assert r.stdout == ('{"name":"foo","mode":"user-v2","gateway":"192.168.42.1",'
                        '"netmask":"255.255.255.0"}\n')
    # a gateway without a prefix is a /24, as with Lima
    assert limactl("network", "create", "bar", "--gateway", "10.77.0.1").returncode == 0
    assert "bar        user-v2    10.77.0.1/24" in limactl("network", "list").stdout
    r = limactl("network", "create", "br", "--mode", "bridged", "--interface", "eth7")
    assert r.returncode == 0, r.stderr
    # instances may name it
    y = lima_home.parent / "n.yaml"
    y.write_text("images: [{location: /etc/profile}]\nnetworks: [{lima: foo}]\n")
    assert limactl("validate", str(y)).returncode == 0

    r = limactl("network", "delete", "foo")
    assert r.returncode == 1
    assert "`limactl network delete` currently always requires `--force`" in r.stderr
    r = limactl("network", "rm", "-f", "foo", "bar", "nope")
    assert r.returncode == 0, r.stderr
    text = (lima_home / "_config" / "networks.yaml").read_text()
    assert "foo:" not in text and "bar:" not in text and "br:" in text
    assert limactl("network", "remove", "--force", "br").returncode == 0
    assert limactl("network", "list").stdout.count("\n") == 5


@pytest.mark.parametrize(("args", "message"), [
    (["user-v2", "--gateway", "192.168.50.1"], "network `user-v2` already exists"),
    (["x"], "network mode `user-v2` requires specifying gateway"),
    (["x", "--gateway", "10.1.2.3", "--interface", "eth0"],
     "network mode `user-v2` does not support specifying interface"),
    (["x", "--mode", "bridged"], "network mode `bridged` requires specifying interface"),
    (["x", "--mode", "bridged", "--interface", "eth0", "--gateway", "10.1.2.1"],
     "network mode `bridged` does not support specifying gateway"),
    (["x", "--gateway", "abc"], "failed to parse CIDR `abc/24`: invalid CIDR address: abc/24"),
    (["x", "--gateway", "127.0.0.1/8"], "invalid IP address: 127.0.0.1"),
    (["x", "--gateway", "0.0.0.0"], "invalid IP address: 0.0.0.0"),
    (["x", "--mode", "vde", "--gateway", "10.1.2.1"], "network mode `vde` is not supported"),
    (["a b", "--gateway", "10.1.2.1"], "invalid network name `a b`: identifier `a b` must"),
    (["x", "--gateway", "192.168.104.9/16"],
     "network `x`: subnet 192.168.0.0/16 overlaps network `host` (192.168.106.0/24)"),
])
def test_network_create_refusals(lima_home: Path, args: list[str], message: str) -> None:
    limactl("network", "list")
    before = (lima_home / "_config" / "networks.yaml").read_text()
    r = limactl("network", "create", *args)
    assert r.returncode == 1 and message in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert (lima_home / "_config" / "networks.yaml").read_text() == before


def test_subnet_collision_with_the_hosts_addresses() -> None:
    from pylima.store.networks import network_entry, subnet_collision

    entry = network_entry("x", "user-v2", "192.0.2.1/24", "")
    assert entry == {"mode": "user-v2", "gateway": "192.0.2.1", "netmask": "255.255.255.0",
                     "interface": ""}
    assert subnet_collision("x", entry, {}, [("eth0", "192.0.2.2/24")]) == (
        "network `x`: subnet 192.0.2.0/24 collides with the host's interface `eth0` "
        "(192.0.2.2/24)")
    assert subnet_collision("x", entry, {}, [("eth0", "198.51.100.2/24"),
                                            ("tun0", "0.0.0.0/0")]) is None
    wide = network_entry("y", "user-v2", "10.0.0.1/8", "")
    assert "collides with the host's interface `wg0`" in str(
        subnet_collision("y", wide, {}, [("wg0", "10.20.30.40/32")]))


def test_instance_create_networks_option() -> None:
    from pylima.machine import config_expressions

    assert config_expressions(networks=["user-v2", "lima:foo", "vzNAT",
                                        {"lima": "bar", "interface": "lima1"}]) == [
        '.networks = [{"lima": "user-v2"}, {"lima": "foo"}, {"vzNAT": true}, '
        '{"lima": "bar", "interface": "lima1"}]']
    assert config_expressions(networks=[]) == [".networks = []"]
    assert config_expressions() == []


def test_old_networks_yaml_fields_warn_as_lima(lima_home: Path) -> None:
    cfg = lima_home / "_config"
    cfg.mkdir(parents=True)
    (cfg / "networks.yaml").write_text(
        "paths:\n  socketVMNet: /opt/socket_vmnet/bin/socket_vmnet\n  vdeSwitch: /x\n"
        "networks:\n  mine:\n    mode: user-v2\n    gateway: 10.9.0.1\n"
        "    netmask: 255.255.255.0\n")
    r = limactl("network", "list")
    assert r.returncode == 0
    assert "Non-strict YAML is deprecated and will be unsupported in a future version " \
           "of Lima" in r.stderr and 'unknown field \\"paths.vdeSwitch\\"' in r.stderr
    # a user-v2 network exists, so Lima's default one is not added
    assert r.stdout.splitlines()[1:] == ["mine    user-v2    10.9.0.1/24    -"]
