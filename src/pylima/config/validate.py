"""Validation of a filled lima.yaml, with Lima's messages (each names the field)."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from typing import Any, Literal

from pylima.config.units import parse_size
from pylima.config.versions import parse_version, version_greater
from pylima.names import validate_identifier, validate_instance_name

__all__ = ["validate", "validate_identifier", "validate_instance_name",
           "validate_param_is_used"]

OS_TYPES = ("Linux", "Darwin", "FreeBSD", "Windows")
ARCH_TYPES = ("x86_64", "aarch64", "armv7l", "ppc64le", "riscv64", "s390x")
MOUNT_TYPES = ("reverse-sshfs", "9p", "virtiofs", "wsl2")
VM_TYPES = ("qemu", "libvirt", "vz", "wsl2")
PROVISION_MODES = ("system", "user", "boot", "dependency", "ansible", "data", "yq")
SYSTEM_MOUNT_POINTS = ("/", "/bin", "/dev", "/etc", "/home", "/opt", "/sbin", "/tmp", "/usr",
                       "/var")
_PARAM_NAME = re.compile(r"^[a-zA-Z][a-zA-Z0-9_]*$")
_DIGEST = re.compile(r"^(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128}|sha384:[0-9a-f]{96})$")


def _port_error(field: str, port: int) -> str | None:
    if port < 0:
        return f"field `{field}` must be > 0"
    if port == 0:
        return f"field `{field}` must be set"
    if port == 22:
        return f"field `{field}` must not be 22"
    if port > 65535:
        return f"field `{field}` must be < 65536"
    return None


def _file_errors(field: str, f: Any, errs: list[str]) -> None:
    if not isinstance(f, dict):
        return
    if not f.get("location"):
        errs.append(f"field `{field}.location` must be set")
    if f.get("arch") and f["arch"] not in ARCH_TYPES:
        errs.append(f"field `arch` must be one of {list(ARCH_TYPES)}; got `{f['arch']}`")
    digest = f.get("digest")
    if digest and not _DIGEST.match(str(digest)):
        errs.append(f"field `{field}.digest` is invalid: {digest}: invalid checksum digest format")


# What is at a host path: "dir", "file" (anything else that exists) or None (nothing).
# A probe of the host, so the caller supplies it (pylima.hostinfo.path_kind).
PathKind = Callable[[str], Literal["dir", "file"] | None]


def validate(y: dict[str, Any], lima_version: str, warn: bool = False, *,
             path_kind: PathKind | None = None,
             network_modes: Callable[[], Mapping[str, str]] | None = None,
             macos_host: bool = False) -> tuple[list[str], list[str]]:
    """Validate a filled config. Returns (errors, warnings).

    `path_kind` tells what is at a host path; the checks of mount locations against
    the host's file system are skipped without it. `network_modes` gives the named
    networks of networks.yaml (name -> mode), called only when a `networks[].lima`
    needs it; without it those names are not checked."""
    errs: list[str] = []
    warnings: list[str] = []
    if y.get("base"):
        errs.append("field `base` must be empty for YAML validation")
    mlv = y.get("minimumLimaVersion")
    if mlv is not None:
        try:
            parse_version(str(mlv))
        except ValueError as e:
            errs.append(f"field `minimumLimaVersion` must be a semvar value, got `{mlv}`: {e}")
        else:
            if version_greater(str(mlv), lima_version):
                errs.append(f"template requires Lima version `{mlv}`; this is only "
                            f"`{lima_version}`")
    if y.get("vmType") not in VM_TYPES:
        errs.append(f"field `vmType` must be one of {list(VM_TYPES)}; got `{y.get('vmType')}`")
    from pylima.config.libvirt import opts_errors

    errs += opts_errors(y)
    if y.get("os") not in OS_TYPES:
        errs.append(f"field `os` must be one of {list(OS_TYPES)}; got `{y.get('os')}`")
    if y.get("arch") not in ARCH_TYPES:
        errs.append(f"field `arch` must be one of {list(ARCH_TYPES)}; got `{y.get('arch')}`")
    shell = (y.get("user") or {}).get("shell") or ""
    if y.get("os") != "Windows" and not shell.startswith("/"):
        errs.append(f"field `user.shell` must be an absolute path, got `{shell}`")
    images = y.get("images") or []
    if not images:
        errs.append("field `images` must be set")
    for i, img in enumerate(images):
        _file_errors(f"images[{i}]", img, errs)
        if not isinstance(img, dict):
            continue
        for sub in ("kernel", "initrd"):
            f = img.get(sub)
            if isinstance(f, dict):
                _file_errors(f"images[{i}].{sub}", f, errs)
                if f.get("arch") != img.get("arch"):
                    errs.append(f"images[{i}].{sub} has unexpected architecture "
                                f"`{f.get('arch')}`, must be `{img.get('arch')}`")
    cpus = y.get("cpus")
    if not cpus:
        errs.append("field `cpus` must be set")
    elif cpus < 0:
        errs.append("field `cpus` must be at least 1")
    for key in ("memory", "disk"):
        try:
            size = parse_size(y.get(key))  # type: ignore[arg-type]
            if size <= 0:
                errs.append(f"field `{key}` must be greater than 0")
        except (ValueError, TypeError) as e:
            errs.append(f"field `{key}` has an invalid value: {e}")
    for i, disk in enumerate(y.get("additionalDisks") or []):
        name = disk if isinstance(disk, str) else (disk or {}).get("name", "")
        reason = validate_identifier(str(name))
        if reason:
            errs.append(f"field `additionalDisks[{i}].name is invalid`: {reason}")
    home = (y.get("user") or {}).get("home")
    for i, m in enumerate(y.get("mounts") or []):
        loc = str(m.get("location") or "")
        if not os.path.isabs(loc) and not loc.startswith("~"):
            errs.append(f"field `mounts[{i}].location` must be an absolute path, got `{loc}`")
        elif path_kind is not None:
            kind = path_kind(loc)
            if kind == "file":
                errs.append(f"field `mounts[{i}].location` refers to a non-directory path: "
                            f"`{loc}`")
            elif warn and kind is None:
                warnings.append(f"field `mounts[{i}].location` refers to a non-existent "
                                f"directory: `{loc}`:")
        mp = str(m.get("mountPoint") or "")
        if mp in SYSTEM_MOUNT_POINTS:
            errs.append(f"field `mounts[{i}].mountPoint` must not be a system path such as "
                        "/etc or /usr")
        elif mp == home:
            errs.append(f"field `mounts[{i}].mountPoint` is the reserved internal home "
                        f"directory `{home}`")
        if mp.startswith("~"):
            errs.append(f"field `mounts[{i}].mountPoint` must not start with `~`")
        try:
            parse_size((m.get("9p") or {}).get("msize") or "0")
        except ValueError as e:
            errs.append(f"field `msize` has an invalid value: {e}")
    lp = (y.get("ssh") or {}).get("localPort") or 0
    if lp:
        port_err = _port_error("ssh.localPort", lp)
        if port_err:
            errs.append(port_err)
    mt = y.get("mountType")
    if mt is not None:
        if mt not in MOUNT_TYPES:
            errs.append(f"field `mountType` must be `reverse-sshfs` or `9p` or `virtiofs`, or "
                        f"`wsl2`, got `{mt}`")
        unsupported = y.get("mountTypesUnsupported") or []
        if mt in unsupported:
            errs.append(f"field `mountType` must not be one of [{' '.join(unsupported)}] "
                        f"(`mountTypesUnsupported`), got `{mt}`")
    _validate_provision(y, errs)
    for i, p in enumerate(y.get("probes") or []):
        if p.get("file") and isinstance(p["file"], dict) and p["file"].get("url"):
            errs.append(f"field `probe[{i}].file.url` must be empty during validation "
                        "(script should already be embedded)")
        if not str(p.get("script") or "").startswith("#!"):
            errs.append(f"field `probe[{i}].script` must start with a '#!' line")
        if p.get("mode") != "readiness":
            errs.append(f"field `probe[{i}].mode` can only be `readiness`")
    for i, rule in enumerate(y.get("portForwards") or []):
        _validate_port_forward(f"portForwards[{i}]", rule, errs)
    for i, c in enumerate(y.get("copyToHost") or []):
        if c.get("guest") and not str(c["guest"]).startswith("/"):
            errs.append(f"field `copyToHost[{i}].guest` must be an absolute path, but is "
                        f"`{c['guest']}`")
        if c.get("host") and not os.path.isabs(str(c["host"])):
            errs.append(f"field `copyToHost[{i}].host` must be an absolute path, but is "
                        f"`{c['host']}`")
    if (y.get("hostResolver") or {}).get("enabled") and y.get("dns"):
        errs.append("field `dns` must be empty when field `HostResolver.Enabled` is true")
    for i, addr in enumerate(y.get("dns") or []):
        try:
            ipaddress.ip_address(str(addr))
        except ValueError:
            errs.append(f"field `dns[{i}]` must be an IP address, got `{addr}`")
    _validate_networks(y, errs, network_modes, macos_host)
    for name, value in (y.get("param") or {}).items():
        if not _PARAM_NAME.match(name):
            errs.append(f"param `{name}` name does not match regex `{_PARAM_NAME.pattern}`")
        for ch in str(value):
            if not ch.isprintable() and ch not in "\t ":
                errs.append(f"param `{name}` value contains unprintable character {ch!r}")
    audio = (y.get("audio") or {}).get("interface") or ""
    if audio and audio not in ("hda", "virtio", "default"):
        errs.append(f"invalid audio.interface \"{audio}\", must be \"hda\" or \"virtio\"")
    if warn:
        if y.get("mountType") == "virtiofs":
            warnings.append("`mountType: virtiofs` on Linux is experimental")
            # Whether this host can serve virtiofs (virtiofsd) is a host probe: the QEMU
            # driver's validate warns about it, not this pure check.
        if y.get("arch") in ("riscv64", "armv7l", "s390x", "ppc64le"):
            warnings.append(f"`arch: {y['arch']} ` is experimental")
        if y.get("mountInotify"):
            warnings.append("`mountInotify` is experimental")
    return errs, warnings


def _validate_provision(y: dict[str, Any], errs: list[str]) -> None:
    for i, p in enumerate(y.get("provision") or []):
        mode = p.get("mode")
        if isinstance(p.get("file"), dict) and p["file"].get("url"):
            errs.append(f"field `provision[{i}].file.url` must be empty during validation "
                        "(script should already be embedded)")
        if mode not in PROVISION_MODES:
            errs.append(f"field `provision[{i}].mode` must one of `system`, `user`, `boot`, "
                        "`data`, `dependency`, `ansible`, or `yq`")
        if p.get("skipDefaultDependencyResolution") is not None and mode != "dependency":
            errs.append(f"field `provision[{i}].mode` cannot set "
                        "skipDefaultDependencyResolution, only valid on scripts of type "
                        "`dependency`")
        if mode in ("data", "yq"):
            path = p.get("path")
            if not path:
                errs.append(f"field `provision[{i}].path` must not be empty when mode is "
                            f"`{mode}`")
            elif not str(path).startswith("/"):
                errs.append(f"field `provision[{i}].path` must be an absolute path")
            if mode == "data" and p.get("content") is None:
                errs.append(f"field `provision[{i}].content` must not be empty when mode is "
                            "`data`")
            if mode == "yq" and not p.get("expression"):
                errs.append(f"field `provision[{i}].expression` must not be empty when mode "
                            "is `yq`")
            try:
                int(str(p.get("permissions")), 8)
            except ValueError as e:
                errs.append(f"field `provision[{i}].permissions` must be an octal number: {e}")
        else:
            if mode not in ("ansible",) and not p.get("script") and not p.get("file"):
                errs.append(f"field `provision[{i}].script` must not be empty")
            for key in ("content", "overwrite", "owner"):
                if p.get(key) is not None:
                    errs.append(f"field `provision[{i}].{key}` can only be set when mode is "
                                "`data`")
            for key in ("path", "permissions"):
                if p.get(key) is not None:
                    errs.append(f"field `provision[{i}].{key}` can only be set when mode is "
                                "`data`, or `yq`")
        if mode != "yq" and p.get("format") is not None:
            errs.append(f"field `provision[{i}].format` can only be set when mode is `yq`")


def _validate_port_forward(field: str, rule: dict[str, Any], errs: list[str]) -> None:
    gip = str(rule.get("guestIP") or "")
    try:
        ipaddress.ip_address(gip)
    except ValueError:
        errs.append(f"field `{field}.guestIP` must be an IP address, got `{gip}`")
    try:
        ipaddress.ip_address(str(rule.get("hostIP") or ""))
    except ValueError:
        errs.append(f"field `{field}.hostIP` must be an IP address, got `{rule.get('hostIP')}`")
    if rule.get("guestIPMustBeZero") and gip != "0.0.0.0":
        errs.append(f"field `{field}.guestIPMustBeZero` can only be true when field "
                    f"`{field}.guestIP` is 0.0.0.0")
    gpr = list(rule.get("guestPortRange") or [0, 0])
    hpr = list(rule.get("hostPortRange") or [0, 0])
    for side, port_range in (("guest", gpr), ("host", hpr)):
        port = rule.get(f"{side}Port")
        if not port:
            continue
        if rule.get(f"{side}Socket"):
            errs.append(f"field `{field}.{side}Port` must be 0 when field "
                        f"`{field}.{side}Socket` is set")
        elif port != port_range[0]:
            errs.append(f"field `{field}.{side}Port` must match field "
                        f"`{field}.{side}PortRange[0]`")
    if len(gpr) != 2 or len(hpr) != 2:
        errs.append(f"field `{field}.guestPortRange` and `{field}.hostPortRange` must have two "
                    "elements")
        return
    for j in range(2):
        if not 0 < gpr[j] < 65536 and not rule.get("guestSocket"):
            errs.append(f"field `{field}.guestPortRange[{j}]` must be between 1 and 65535")
        if not rule.get("hostSocket") and not 0 <= hpr[j] < 65536:
            errs.append(f"field `{field}.hostPortRange[{j}]` must be between 0 and 65535")
    if gpr[1] < gpr[0]:
        errs.append(f"field `{field}.guestPortRange[1]` must be greater than or equal to field "
                    f"`{field}.guestPortRange[0]`")
    if hpr[1] < hpr[0]:
        errs.append(f"field `{field}.hostPortRange[1]` must be greater than or equal to field "
                    f"`{field}.hostPortRange[0]`")
    if rule.get("guestSocket") and not str(rule["guestSocket"]).startswith("/"):
        errs.append(f"field `{field}.guestSocket` must be an absolute path, but is "
                    f"`{rule['guestSocket']}`")
    if not rule.get("hostSocket") and not rule.get("guestSocket") \
            and gpr[1] - gpr[0] != hpr[1] - hpr[0]:
        errs.append(f"field `{field}.hostPortRange` must specify the same number of ports as "
                    f"field `{field}.guestPortRange`")
    if rule.get("proto") not in ("tcp", "udp", "any"):
        errs.append(f"field `{field}.proto` must be `tcp`, `udp`, or `any`")


def _validate_networks(y: dict[str, Any], errs: list[str],
                       network_modes: Callable[[], Mapping[str, str]] | None,
                       macos_host: bool) -> None:
    seen: dict[str, int] = {}
    modes: Mapping[str, str] | None = None
    for i, nw in enumerate(y.get("networks") or []):
        field = f"networks[{i}]"
        if nw.get("lima") and network_modes is not None:
            modes = network_modes() if modes is None else modes
            name = str(nw["lima"])
            if name not in modes:
                errs.append(f"field `{field}.lima` references network `{name}` which is "
                            "not defined in networks.yaml")
            elif modes[name] != "user-v2" and not macos_host:
                errs.append(f"field `{field}.lima` is only supported on macOS right now")
        if nw.get("lima") and nw.get("socket"):
            errs.append(f"field `{field}.lima` and field `{field}.socket` are mutually exclusive")
        if nw.get("vzNAT") and y.get("vmType") != "vz":
            errs.append(f"field `{field}.vzNAT` requires `vmType` `vz`")
        if not nw.get("lima") and not nw.get("socket") and not nw.get("vzNAT"):
            errs.append(f"field `{field}.lima` or  field `{field}.socket must be set")
        iface = str(nw.get("interface") or "")
        if len(iface) >= 16:
            errs.append(f"field `{field}.interface` must be less than 16 bytes, but is "
                        f"{len(iface)} bytes: `{iface}`")
        if any(c.isspace() or c == "/" for c in iface):
            errs.append(f"field `{field}.interface` must not contain whitespace or slashes")
        if iface == "eth0":
            errs.append(f"field `{field}.interface` must not be set to `eth0` because it is "
                        "reserved for slirp")
        if iface in seen:
            errs.append(f"field `{field}.interface` value `{iface}` has already been used by "
                        f"field `networks[{seen[iface]}].interface`")
        seen[iface] = i


def validate_param_is_used(y: dict[str, Any]) -> str | None:
    """Lima refuses `param` keys that nothing references (checked before defaults)."""
    texts: list[str] = []
    for p in y.get("provision") or []:
        if isinstance(p, dict):
            texts += [str(p.get(k) or "") for k in ("script", "content", "expression", "owner",
                                                    "path")]
    for p in y.get("probes") or []:
        if isinstance(p, dict):
            texts.append(str(p.get("script") or ""))
    for c in y.get("copyToHost") or []:
        if isinstance(c, dict):
            texts += [str(c.get("guest") or ""), str(c.get("host") or "")]
    for r in y.get("portForwards") or []:
        if isinstance(r, dict):
            texts += [str(r.get("guestSocket") or ""), str(r.get("hostSocket") or "")]
    for m in y.get("mounts") or []:
        if isinstance(m, dict):
            texts += [str(m.get("location") or ""), str(m.get("mountPoint") or "")]
    for key in (y.get("param") or {}):
        if key == "internal_netplanOptional":
            continue
        pattern = re.compile(r"{{[^}]*\.Param\." + re.escape(key) + r"\b[^}]*}}|PARAM_" +
                             re.escape(key) + r"\b")
        if not any(pattern.search(t) for t in texts):
            return (f"field `param` key `{key}` is not used in any provision, probe, "
                    "copyToHost, or portForward")
    return None
