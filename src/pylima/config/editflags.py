"""`limactl create/start/edit` flags -> yq expressions, as Lima builds them.

PURE: takes flag values, returns expressions; the caller evaluates them.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pylima.errors import ConfigError


@dataclass
class EditFlags:
    cpus: int | None = None
    memory: float | None = None  # GiB
    disk: float | None = None  # GiB
    arch: str | None = None
    vm_type: str | None = None
    mount: Sequence[str] = ()
    mount_only: Sequence[str] = ()
    mount_none: bool = False
    mount_type: str | None = None
    mount_writable: bool | None = None
    mount_inotify: bool | None = None
    dns: Sequence[str] = ()
    network: Sequence[str] = ()
    nested_virt: bool | None = None
    rosetta: bool | None = None
    plain: bool | None = None
    containerd: str | None = None
    port_forward: Sequence[str] = ()
    ssh_port: int | None = None
    video: bool | None = None
    shell: str | None = None
    timezone: str | None = None
    image_variant: str | None = None
    audio_device: str | None = None
    audio_interface: str | None = None
    param: Sequence[str] = ()
    set: Sequence[str] = field(default_factory=tuple)


def _go_float(v: float) -> str:
    return f"{v:g}"


def expand_local_path(path: str, home: str, cwd: str) -> str:
    """Lima's localpathutil.Expand: `~` and `~/...` under `home`, a relative path
    under `cwd`, the result cleaned (`--mount-only .:w` names the working directory)."""
    if not path:
        raise ConfigError("empty path")
    if path.startswith("~"):
        if path != "~" and not path.startswith("~/"):
            raise ConfigError(f"unexpandable path `{path}`")
        path = home + path[1:]
    return posixpath.normpath(posixpath.join(cwd, path))


def _mount_list(specs: Sequence[str], home: str, cwd: str) -> str:
    items = []
    for s in specs:
        writable = s.endswith(":w")
        loc = expand_local_path(s[:-2] if writable else s, home, cwd)
        items.append(json.dumps({"location": loc, "mountPoint": loc, "writable": writable}))
    return "[" + ",".join(items) + "]"


def port_forward_expression(specs: Sequence[str]) -> str:
    rules = []
    for spec in specs:
        parts = spec.split(",")
        hp = parts[0].split(":")
        if len(hp) != 2 or not all(p.strip().isdigit() for p in hp):
            raise ConfigError(f"invalid port forward format `{spec}`, expected HOST:GUEST or "
                              "HOST:GUEST,static=true")
        static = False
        for extra in parts[1:]:
            key, _, value = extra.partition("=")
            if key.strip() != "static":
                raise ConfigError(f"invalid parameter `{extra}`, expected `static=` followed "
                                  "by a boolean value")
            if value.strip().lower() not in ("true", "false", "1", "0"):
                raise ConfigError(f"invalid value for static parameter: `{value}`")
            static = value.strip().lower() in ("true", "1")
        rules.append(json.dumps({"guestPort": int(hp[1]), "hostPort": int(hp[0]),
                                 "static": static}))
    return f".portForwards += [{','.join(rules)}]"


def param_expressions(params: Sequence[str], declared: Mapping[str, str] | None) -> list[str]:
    exprs = []
    for p in params:
        key, sep, value = p.partition("=")
        if not sep or not key:
            raise ConfigError(f"invalid parameter `{p}`, expected NAME=VALUE")
        if declared is None or key not in declared:
            raise ConfigError(f"template does not define param `{key}`")
        exprs.append(f".param[{json.dumps(key)}] = {json.dumps(value)}")
    return exprs


def _flag(name: str, build: Any, *args: Any) -> Any:
    """`build(*args)`, its error prefixed as Lima prefixes each edit flag's."""
    try:
        return build(*args)
    except ConfigError as e:
        raise ConfigError(f"error while processing flag `{name}`: {e.message}",
                          hint=e.hint) from None


def yq_expressions(f: EditFlags, *, new_instance: bool,
                   declared_params: Mapping[str, str] | None = None,
                   home: str, cwd: str) -> tuple[list[str], list[str]]:
    """Returns (expressions, warnings). `home` is the host user's home directory, which
    `~` in `--mount` locations stands for (the caller's host_facts().home); `cwd` is
    the working directory relative locations are taken from (the caller's)."""
    exprs: list[str] = []
    warnings: list[str] = []

    def only_new(flag: str, value: object) -> bool:
        if new_instance:
            return True
        warnings.append(f"`--{flag}` is not applicable to an existing instance (Hint: create a "
                        f"new instance with `limactl create --{flag}={value} --name=NAME`)")
        return False

    if f.cpus is not None:
        if f.cpus < 0:
            raise ConfigError("error while processing flag `cpus`: invalid value for number of "
                              "cpus, must be >= 0")
        exprs.append(f".cpus = {f.cpus}")
    if f.dns:
        ips = ",".join(json.dumps(ip) for ip in f.dns)
        exprs.append(f".dns += [{ips}] | .dns |= unique | .hostResolver.enabled=false")
    if f.memory is not None:
        exprs.append(f'.memory = "{_go_float(f.memory)}GiB"')
    if f.mount and f.mount_only:
        raise ConfigError("error while processing flag `mount`: flag `--mount` conflicts with "
                          "`--mount-only`")
    if f.mount_none and (f.mount or f.mount_only):
        name = "mount" if f.mount else "mount-only"
        raise ConfigError(f"error while processing flag `mount-none`: flag `--mount-none` "
                          f"conflicts with `{name}`")
    if f.mount:
        exprs.append(f".mounts = {_flag('mount', _mount_list, f.mount, home, cwd)} + .mounts")
    if f.mount_only:
        exprs.append(f".mounts = {_flag('mount-only', _mount_list, f.mount_only, home, cwd)}")
    if f.mount_none:
        exprs.append(".mounts = null")
    if f.mount_type is not None:
        exprs.append(f".mountType = {json.dumps(f.mount_type)}")
    if f.mount_inotify is not None:
        warnings.append("`--mount-inotify` is experimental")
        exprs.append(f".mountInotify = {json.dumps(f.mount_inotify)}")
    if f.mount_writable is not None:
        exprs.append(f".mounts[].writable = {json.dumps(f.mount_writable)}")
    if f.network:
        nets = []
        for n in f.network:
            if n == "vzNAT":
                nets.append('{"vzNAT": true}')
            elif n.startswith("lima:"):
                nets.append(json.dumps({"lima": n[5:]}))
            else:
                raise ConfigError(f"error while processing flag `network`: network name must be "
                                  f"`vzNAT` or `lima:*`, got `{n}`")
        exprs.append(f".networks += [{','.join(nets)}] | .networks |= unique_by(.lima)")
    if f.nested_virt is not None:
        exprs.append(f".nestedVirtualization = {json.dumps(f.nested_virt)}")
    if f.rosetta is not None:
        b = json.dumps(f.rosetta)
        exprs.append(f".vmOpts.vz.rosetta.enabled = {b} | .vmOpts.vz.rosetta.binfmt = {b}")
    exprs.extend(f.set)
    if f.param:
        exprs.extend(_flag("param", param_expressions, f.param, declared_params))
    if f.ssh_port is not None:
        exprs.append(f".ssh.localPort = {f.ssh_port}")
    if f.video is not None:
        exprs.append('.video.display = "default"' if f.video else '.video.display = "none"')
    if f.arch is not None and only_new("arch", f.arch):
        exprs.append(f".arch = {json.dumps(f.arch)}")
    if f.audio_device is not None:
        warnings.append("`--audio-device` is experimental")
        exprs.append(f".audio.device = {json.dumps(f.audio_device)}")
    if f.audio_interface is not None:
        warnings.append("`--audio-interface` is experimental")
        exprs.append(f".audio.interface = {json.dumps(f.audio_interface)}")
    if f.image_variant is not None and only_new("image-variant", f.image_variant):
        if not f.image_variant:
            raise ConfigError("error while processing flag `image-variant`: `--image-variant` "
                              "must not be empty")
        exprs.append(f".images = [.images[] | select(.variant == {json.dumps(f.image_variant)})]")
    if f.vm_type is not None:
        exprs.append(f".vmType = {json.dumps(f.vm_type)}")
    if f.containerd is not None and only_new("containerd", f.containerd):
        modes = {"user": (True, False), "system": (False, True),
                 "user+system": (True, True), "none": (False, False)}
        if f.containerd not in modes:
            raise ConfigError("error while processing flag `containerd`: expected one of "
                              f"[`user`, `system`, `user+system`, `none`], got `{f.containerd}`")
        u, s = modes[f.containerd]
        exprs.append(f".containerd.user = {json.dumps(u)} | .containerd.system = {json.dumps(s)}")
    if f.disk is not None:
        exprs.append(f'.disk= "{_go_float(f.disk)}GiB"')
    if f.plain is not None and only_new("plain", f.plain):
        exprs.append(f".plain = {json.dumps(f.plain)}")
    if f.port_forward:
        exprs.append(_flag("port-forward", port_forward_expression, f.port_forward))
    if f.shell is not None:
        exprs.append(f".user.shell = {json.dumps(f.shell)}")
    if f.timezone is not None:
        exprs.append(f".timezone = {json.dumps(f.timezone)}")
    return exprs, warnings
