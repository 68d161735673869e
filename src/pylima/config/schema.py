"""The lima.yaml schema (Lima v2) as data, and a checker that names field paths.

The schema is a small type language rather than a class per section because the
same description drives three things: type errors naming the field path, warnings
for unknown fields (Lima loads files written for newer versions or by other tools
and only warns), and `limactl template copy --fill` output order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

# A type is one of these names, or a composite built with the helpers below.
#   str int bool size(str|int) float any ip(str) text(str, strictly)
Type = Union[str, "ListOf", "MapOf", "Struct", "OneOf"]


@dataclass(frozen=True)
class ListOf:
    item: Type


@dataclass(frozen=True)
class MapOf:
    value: Type


@dataclass(frozen=True)
class Struct:
    fields: dict[str, Type]


@dataclass(frozen=True)
class OneOf:
    """Any of several shapes (e.g. `base:` is a string, a list of strings or maps)."""

    options: tuple[Type, ...]


FILE = Struct({"location": "str", "arch": "str", "digest": "str"})
LOCATOR = OneOf(("text", Struct({"url": "text", "digest": "text"})))

MOUNT = Struct({
    "location": "str",
    "mountPoint": "str",
    "writable": "bool",
    "sshfs": Struct({"cache": "bool", "followSymlinks": "bool", "sftpDriver": "str"}),
    "9p": Struct({"securityModel": "str", "protocolVersion": "str", "msize": "size",
                  "cache": "str"}),
    "virtiofs": Struct({"queueSize": "int"}),
})

PROVISION = Struct({
    "mode": "str",
    "skipDefaultDependencyResolution": "bool",
    "script": "str",
    "file": LOCATOR,
    "playbook": "str",
    "content": "str",
    "overwrite": "bool",
    "owner": "str",
    "path": "str",
    "permissions": OneOf(("str", "int")),
    "expression": "str",
    "format": "str",
})

PROBE = Struct({"mode": "str", "description": "str", "script": "str", "file": LOCATOR,
                "hint": "str"})

PORT_FORWARD = Struct({
    "guestIPMustBeZero": "bool",
    "guestIP": "ip",
    "guestPort": "int",
    "guestPortRange": ListOf("int"),
    "guestSocket": "str",
    "hostIP": "ip",
    "hostPort": "int",
    "hostPortRange": ListOf("int"),
    "hostSocket": "str",
    "proto": "str",
    "reverse": "bool",
    "ignore": "bool",
    "static": "bool",
})

ROSETTA = Struct({"enabled": "bool", "binfmt": "bool"})

LIMA_YAML = Struct({
    "base": OneOf(("text", ListOf(LOCATOR))),
    "minimumLimaVersion": "str",
    "vmType": "str",
    "vmOpts": MapOf("any"),
    "os": "str",
    "arch": "str",
    "images": ListOf(Struct({
        "location": "str", "arch": "str", "digest": "str",
        "kernel": Struct({"location": "str", "arch": "str", "digest": "str", "cmdline": "str"}),
        "initrd": FILE,
        "variant": "str",
        "archVariant": "str",
    })),
    "cpuType": MapOf("str"),
    "cpus": "int",
    "memory": "size",
    "disk": "size",
    "additionalDisks": ListOf(OneOf(("str", Struct({
        "name": "str", "format": "bool", "fsType": "str", "fsArgs": ListOf("str")})))),
    "mounts": ListOf(MOUNT),
    "mountTypesUnsupported": ListOf("str"),
    "mountType": "str",
    "mountInotify": "bool",
    "ssh": Struct({"localPort": "int", "loadDotSSHPubKeys": "bool", "forwardAgent": "bool",
                   "forwardX11": "bool", "forwardX11Trusted": "bool", "overVsock": "bool"}),
    "firmware": Struct({"legacyBIOS": "bool", "images": ListOf(Struct({
        "location": "str", "arch": "str", "digest": "str", "vmType": "str"}))}),
    "audio": Struct({"device": "str", "interface": "str"}),
    "video": Struct({"display": "str", "vnc": Struct({"display": "str"})}),
    "provision": ListOf(PROVISION),
    "upgradePackages": "bool",
    "containerd": Struct({"system": "bool", "user": "bool", "archives": ListOf(FILE)}),
    "guestInstallPrefix": "str",
    "probes": ListOf(PROBE),
    "portForwards": ListOf(PORT_FORWARD),
    "copyToHost": ListOf(Struct({"guest": "str", "host": "str", "skipIfMissing": "bool",
                                 "deleteOnStop": "bool"})),
    "message": "str",
    "networks": ListOf(Struct({"lima": "str", "socket": "str", "vzNAT": "bool",
                               "macAddress": "str", "interface": "str", "metric": "int"})),
    "env": MapOf("str"),
    "param": MapOf("str"),
    "dns": ListOf("ip"),
    "hostResolver": Struct({"enabled": "bool", "ipv6": "bool", "hosts": MapOf("str")}),
    "propagateProxyEnv": "bool",
    "caCerts": Struct({"removeDefaults": "bool", "files": ListOf("str"),
                       "certs": ListOf("str")}),
    "rosetta": ROSETTA,
    "plain": "bool",
    "timezone": "str",
    "nestedVirtualization": "bool",
    "user": Struct({"name": "str", "comment": "str", "home": "str", "shell": "str",
                    "uid": "int", "passwordlessSudo": "bool"}),
    "tpm": "bool",
    "osOpts": MapOf("any"),
})

TOP_LEVEL_FIELDS = tuple(LIMA_YAML.fields)

_TYPE_WORDS = {"str": "a string", "text": "a string", "int": "an integer", "bool": "a boolean",
               "size": "a size such as \"4GiB\"", "float": "a number", "ip": "an IP address",
               "any": "a value"}


def _describe(t: Type) -> str:
    if isinstance(t, str):
        return _TYPE_WORDS[t]
    if isinstance(t, ListOf):
        return "a list"
    if isinstance(t, (MapOf, Struct)):
        return "a map"
    return " or ".join(_describe(o) for o in t.options)


def _scalar_ok(t: str, value: Any) -> bool:
    if t == "any":
        return True
    if t == "text":
        return isinstance(value, str)
    if t == "bool":
        return isinstance(value, bool)
    if t == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if t == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if t == "size":
        return (isinstance(value, int) and not isinstance(value, bool)) or isinstance(value, str)
    # str and ip: YAML scalars that are not maps/lists. Go's YAML decoder turns numbers
    # into strings for string fields, so accept them (e.g. `minimumLimaVersion: 2.0`).
    return isinstance(value, (str, int, float)) and not isinstance(value, bool) \
        if t == "ip" else isinstance(value, (str, int, float))


def _fits(t: Type, value: Any) -> bool:
    """Shallow shape test, used to pick the branch of a OneOf."""
    if isinstance(t, str):
        return _scalar_ok(t, value)
    if isinstance(t, ListOf):
        return isinstance(value, list)
    if isinstance(t, (MapOf, Struct)):
        return isinstance(value, dict)
    return any(_fits(o, value) for o in t.options)


def join_path(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def check(value: Any, t: Type = LIMA_YAML, path: str = "") -> tuple[list[str], list[str]]:
    """Check `value` against the schema.

    Returns (errors, unknown_field_paths). `null` is accepted anywhere (Lima treats an
    explicit null as unset).
    """
    errors: list[str] = []
    unknown: list[str] = []
    _check(value, t, path, errors, unknown)
    return errors, unknown


def _check(value: Any, t: Type, path: str, errors: list[str], unknown: list[str]) -> None:
    if value is None:
        return
    if isinstance(t, OneOf):
        for option in t.options:
            if _fits(option, value):
                _check(value, option, path, errors, unknown)
                return
        errors.append(f"field `{path}` must be {_describe(t)}, got {_show(value)}")
        return
    if not _fits(t, value):
        errors.append(f"field `{path}` must be {_describe(t)}, got {_show(value)}")
        return
    if isinstance(t, ListOf):
        for i, item in enumerate(value):
            _check(item, t.item, join_path(path, i), errors, unknown)
    elif isinstance(t, MapOf):
        for k, v in value.items():
            if not isinstance(k, str):
                errors.append(f"field `{path}` must have string keys, got {_show(k)}")
                continue
            _check(v, t.value, join_path(path, k), errors, unknown)
    elif isinstance(t, Struct):
        for k, v in value.items():
            sub = join_path(path, str(k))
            if k not in t.fields:
                unknown.append(sub)
                continue
            _check(v, t.fields[k], sub, errors, unknown)


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "a map"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    return f"`{value}`"
