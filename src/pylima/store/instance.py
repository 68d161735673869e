"""Inspecting instances in $LIMA_HOME (Lima's store.Inspect and Instance JSON)."""

from __future__ import annotations

import os
from pathlib import Path

from pylima import dirs

TYPE_CHECKING = False  # typing itself costs start-up time on this path

if TYPE_CHECKING:
    from typing import Any

STATUS_RUNNING = "Running"
STATUS_STOPPED = "Stopped"
STATUS_BROKEN = "Broken"


def instance_names() -> list[str]:
    """Instance directory names under $LIMA_HOME, sorted (skips `_*` and `.*`)."""
    home = dirs.lima_home()
    try:
        entries = list(os.scandir(home))
    except FileNotFoundError:
        return []
    return sorted(e.name for e in entries
                  if e.is_dir() and not e.name.startswith((".", "_")))


def pid_alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie, e.g. our own exited child, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return True


def read_pid_file(path: str | Path, expect: str = "") -> int:
    """The pid in `path` if that process is alive (and its command line contains
    `expect`, so that a reused pid never counts), else 0."""
    try:
        with open(path) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return 0
    if not pid_alive(pid):
        return 0
    if expect:
        argv = proc_argv(pid)
        if argv is None:
            return pid  # another user's process: it is alive, trust the file
        if expect not in " ".join(argv):
            return 0
    return pid


def proc_argv(pid: int) -> list[str] | None:
    """Process `pid`'s command line, or None when it cannot be read."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().decode(errors="replace").rstrip("\0").split("\0")
    except OSError:
        return None


def _stranger_holding_lock(name: str) -> str:
    """"PID (command)" of a process other than pylima's holding the instance lock."""
    from pylima.store.lock import lock_holders

    for pid in lock_holders(name):
        argv = proc_argv(pid)
        if argv is None:
            continue
        text = " ".join(argv).strip()
        if "pylima" in text or "limactl" in text or os.path.basename(argv[0]) == "lima":
            continue
        return f"{pid} ({text[:80]})"
    return ""


def write_atomic(path: str | Path, text: str) -> None:
    """Write a small file (pid, state) so that readers see the old or the new
    content, never a torn one."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def ssh_port_from_config(path: str | Path) -> int:
    import re

    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return 0
    m = re.search(r"^\s*Port\s+(\d+)", text, re.MULTILINE)
    return int(m.group(1)) if m else 0


class Instance:
    """What `limactl list` shows of one instance (a plain class: dataclasses cost
    start-up time on the `limactl list` path)."""

    def __init__(self, name: str, dir: Path) -> None:
        self.name = name
        self.dir = dir
        self.status = ""
        self.config: dict[str, Any] | None = None
        self.errors: list[str] = []
        self.warnings: list[str] = []
        self.vm_type = ""
        self.arch = ""
        self.cpus = 0
        self.memory = 0
        self.disk = 0
        self.message = ""
        self.ssh_local_port = 0
        self.host_agent_pid = 0
        self.driver_pid = 0
        self.protected = False
        self.lima_version = ""

    def __repr__(self) -> str:
        return f"Instance(name={self.name!r}, status={self.status!r}, dir={str(self.dir)!r})"

    @property
    def hostname(self) -> str:
        return f"lima-{self.name}"

    @property
    def ssh_config_file(self) -> Path:
        return self.dir / dirs.SSH_CONFIG

    @property
    def remote_host(self) -> str:
        """The other host the instance runs on (pylima: vmType libvirt with a
        qemu+ssh:// URI; its `user@host`), "" for this host."""
        if self.vm_type != "libvirt" or not self.config:
            return ""
        from pylima.config.libvirt import parse_uri
        from pylima.errors import ConfigError

        uri = ((self.config.get("vmOpts") or {}).get("libvirt") or {}).get("uri")
        try:
            u = parse_uri(str(uri)) if uri else None
        except ConfigError:
            return ""
        return u.ssh_destination if u is not None and u.remote else ""

    @property
    def port_forwards(self) -> list[dict[str, Any]]:
        """The active port forwards of a running instance (pylima; the host agent
        keeps them in ha.portforwards.json)."""
        if not self.host_agent_pid:
            return []
        import json

        try:
            with open(self.dir / dirs.PORT_FORWARDS) as f:
                data = json.load(f)
        except (OSError, ValueError):
            return []
        return data if isinstance(data, list) else []

    @property
    def param(self) -> dict[str, str]:
        return dict((self.config or {}).get("param") or {})

    def to_json(self) -> dict[str, Any]:
        """Lima's Instance JSON (keys, order and omitempty as `limactl list --json`)."""
        cfg = self.config
        out: dict[str, Any] = {"name": self.name, "hostname": self.hostname,
                               "status": self.status, "dir": str(self.dir),
                               "vmType": self.vm_type, "arch": self.arch}
        if self.cpus:
            out["cpus"] = self.cpus
        if self.memory:
            out["memory"] = self.memory
        if self.disk:
            out["disk"] = self.disk
        if self.message:
            out["message"] = self.message
        if cfg and cfg.get("additionalDisks"):
            out["additionalDisks"] = cfg["additionalDisks"]
        if cfg and cfg.get("networks"):
            out["network"] = cfg["networks"]
        if self.ssh_local_port:
            out["sshLocalPort"] = self.ssh_local_port
        if cfg is not None:
            out["sshConfigFile"] = str(self.ssh_config_file)
        if self.host_agent_pid:
            out["hostAgentPID"] = self.host_agent_pid
        if self.driver_pid:
            out["driverPID"] = self.driver_pid
        if self.errors:
            out["errors"] = list(self.errors)
        if cfg is not None:
            out["config"] = cfg
            out["sshAddress"] = "127.0.0.1"
        out["protected"] = self.protected
        out["limaVersion"] = self.lima_version
        if self.param:
            out["param"] = self.param
        forwards = self.port_forwards
        if forwards:
            out["portForwards"] = forwards  # pylima
        if self.remote_host:
            out["pylimaHost"] = self.remote_host
        return out

    def format_data(self) -> dict[str, Any]:
        """Fields for `--format '{{...}}'` Go templates (Lima's FormatData, Go names;
        the config's maps answer to LimaYAML's Go field names as well as to its keys)."""
        from pylima.gofmt import GoFields

        view = GoFields(self.config or {})
        data: dict[str, Any] = {
            "Name": self.name, "Hostname": self.hostname, "Status": self.status,
            "Dir": str(self.dir), "VMType": self.vm_type, "Arch": self.arch,
            "CPUs": self.cpus, "Memory": self.memory, "Disk": self.disk,
            "Message": self.message.rstrip("\n"),
            "AdditionalDisks": view.get("additionalDisks") or [],
            "Networks": view.get("networks") or [],
            "SSHLocalPort": self.ssh_local_port,
            "SSHConfigFile": str(self.ssh_config_file) if self.config is not None else "",
            "HostAgentPID": self.host_agent_pid, "DriverPID": self.driver_pid,
            "Errors": list(self.errors), "Config": view if self.config is not None else None,
            "SSHAddress": "127.0.0.1" if self.config is not None else "",
            "Protected": self.protected, "LimaVersion": self.lima_version,
            "Param": self.param, "AutoStartedIdentifier": "",
            "PortForwards": self.port_forwards,
        }
        data.update(global_fields())
        return data


FORMAT_FIELDS = ("AdditionalDisks", "Arch", "AutoStartedIdentifier", "CPUs", "Config", "Dir",
                 "Disk", "DriverPID", "Errors", "HostAgentPID", "Hostname", "LimaVersion",
                 "Memory", "Message", "Name", "Networks", "Param", "Protected", "SSHAddress",
                 "SSHConfigFile", "SSHLocalPort", "Status", "VMType")


def global_fields() -> dict[str, str]:
    from pylima.hostinfo import host_arch, host_os

    return {"HostOS": host_os(), "HostArch": host_arch(),
            "LimaHome": str(dirs.lima_home()),
            "IdentityFile": str(dirs.config_dir() / dirs.USER_KEY)}


def inspect(name: str) -> Instance:
    """Inspect instance NAME. Raises InstanceNotFound when its directory is absent;
    problems with its files are reported in `errors` with status Broken."""
    from pylima.config.units import parse_size
    from pylima.errors import InstanceNotFound, LimaError
    from pylima.names import validate_instance_name
    from pylima.store.configcache import load_instance_config

    reason = validate_instance_name(name)
    if reason:
        raise LimaError(reason)
    inst_dir = dirs.instance_dir(name)
    inst = Instance(name=name, dir=inst_dir)
    d = str(inst_dir)  # plain strings below: this runs once per instance in `limactl list`
    if not os.path.isdir(d):
        raise InstanceNotFound(f"instance `{name}` does not exist",
                               hint=f"run `limactl create --name={name}` to create it")
    yaml_path = os.path.join(d, dirs.LIMA_YAML)
    try:
        cfg, inst.warnings = load_instance_config(yaml_path)
    except FileNotFoundError:
        inst.status = STATUS_BROKEN
        inst.errors.append(f"open {yaml_path}: no such file or directory")
        return inst
    except OSError as e:
        inst.status = STATUS_BROKEN
        inst.errors.append(f"open {yaml_path}: {e.strerror}")
        return inst
    except LimaError as e:
        inst.status = STATUS_BROKEN
        inst.errors.append(str(e))
        return inst
    inst.config = cfg
    inst.arch = cfg["arch"]
    inst.vm_type = cfg["vmType"]
    inst.cpus = int(cfg.get("cpus") or 0)
    try:
        inst.memory = parse_size(cfg["memory"])
    except (ValueError, TypeError):
        pass
    try:
        inst.disk = parse_size(cfg["disk"])
    except (ValueError, TypeError):
        pass
    join = os.path.join
    inst.ssh_local_port = int((cfg.get("ssh") or {}).get("localPort") or 0) \
        or ssh_port_from_config(join(d, dirs.SSH_CONFIG))
    inst.host_agent_pid = read_pid_file(join(d, dirs.HA_PID), "hostagent")
    if inst.vm_type == "libvirt":
        # The host agent owns the domain; it writes libvirt.pid while libvirt runs it.
        inst.driver_pid = read_pid_file(join(d, "libvirt.pid"), "hostagent")
    else:
        inst.driver_pid = read_pid_file(join(d, dirs.QEMU_PID), f"lima-{name}")
    inst.protected = os.path.lexists(join(d, dirs.PROTECTED))
    try:
        with open(join(d, dirs.LIMA_VERSION)) as f:
            inst.lima_version = f.read().strip()
    except OSError:
        pass
    if inst.host_agent_pid and inst.driver_pid:
        inst.status = STATUS_RUNNING
    elif not inst.host_agent_pid and not inst.driver_pid:
        inst.status = STATUS_STOPPED
        stranger = _stranger_holding_lock(name)
        if stranger:
            inst.status = STATUS_BROKEN
            inst.errors.append(f"the instance lock is held by process {stranger}, which is "
                               "not pylima's")
    elif inst.host_agent_pid:
        inst.status = STATUS_BROKEN
        inst.errors.append("host agent is running but driver is not")
    else:
        inst.status = STATUS_BROKEN
        inst.errors.append(f"{inst.vm_type} driver is running but host agent is not")
    msg = cfg.get("message") or ""
    if msg:
        from pylima.gotemplate import GoTemplateError, render

        try:
            inst.message = render(msg, {**inst.format_data(), "Param": inst.param})
        except GoTemplateError as e:
            inst.status = STATUS_BROKEN
            inst.errors.append(f"cannot execute template `{msg}`: {e}")
    return inst
