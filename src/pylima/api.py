"""pylima's Python API. The CLI calls these functions; they raise LimaError and
never print (progress and warnings go to logging)."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pylima.config.editflags import EditFlags, yq_expressions
from pylima.config.load import Loaded, load_document, validate_or_raise
from pylima.config.yamlio import apply_changes, dump_roundtrip, load_roundtrip, parse_yaml, to_plain
from pylima.config.yq import evaluate_one
from pylima.errors import ConfigError, InstanceError, InstanceNotFound, LimaError
from pylima.hostinfo import host_facts, path_kind
from pylima.names import validate_instance_name
from pylima.store import dirs
from pylima.store.configfiles import read_config_files
from pylima.store.instance import (
    STATUS_RUNNING,
    STATUS_STOPPED,
    Instance,
    inspect,
    instance_names,
    pid_alive,
)
from pylima.store.lock import instance_lock
from pylima.templates.locator import Template, embed_bases, embed_scripts, read_template
from pylima.version import LIMA_COMPAT_VERSION

log = logging.getLogger(__name__)

DEFAULT_INSTANCE_NAME = "default"


@dataclass
class PreparedTemplate:
    """A template ready to become an instance: its YAML text (comments kept), parsed."""

    name: str
    text: str
    doc: dict[str, Any]


def _check_driver_can_run(cfg: dict[str, Any]) -> None:
    """The instance's driver checks that this host can run `cfg` (raises LimaError)
    and warns about what will not work."""
    from pylima.drivers import registry

    for w in registry.validate(cfg):
        log.warning(w)


def _check_vm_type_host(cfg: dict[str, Any]) -> None:
    """vz and wsl2 (macOS and Windows hosts), and Rosetta: refused before anything
    else when this host cannot run them."""
    import platform

    from pylima.drivers import check_vm_type_supported

    check_vm_type_supported(cfg, platform.system(), platform.machine())


# Guest operating systems pylima's QEMU driver boots. Lima also runs FreeBSD and
# Windows guests under QEMU (and macOS ones under vz); those templates load and
# validate here, but an instance of them is refused when it is created.
SUPPORTED_GUEST_OS = ("Linux",)


def _check_guest_os_supported(cfg: dict[str, Any]) -> None:
    guest_os = str(cfg.get("os") or "Linux")
    if guest_os not in SUPPORTED_GUEST_OS:
        raise ConfigError(f"currently only Linux guest is supported by pylima; got "
                          f"`os: {guest_os}`",
                          hint="pick a Linux template: `limactl create --list-templates`")


def _check_vm_type_registered(cfg: dict[str, Any]) -> None:
    """A vmType other than Lima's built-in ones is an external driver or a mistake: the
    registry says which, in one line."""
    from pylima.drivers import registry

    vm_type = str(cfg.get("vmType") or "qemu")
    if vm_type not in registry.BUILTIN_NAMES:
        registry.driver_class(vm_type)


def prepare_template(tmpl: Template, expressions: list[str]) -> PreparedTemplate:
    """Resolve `base:` and apply yq expressions, keeping the template's comments."""
    what = f"template `{tmpl.locator}`"
    original = parse_yaml(tmpl.data, what)
    plain = embed_scripts(original, tmpl.locator)
    if plain.get("base"):
        plain = embed_bases(plain, tmpl.locator)
    if expressions:
        plain = evaluate_one(" | ".join(expressions), plain, what="yq expression")
        if not isinstance(plain, dict):
            raise ConfigError("the yq expression must leave a map at the top of the document")
    if plain is original:
        text = tmpl.data.decode()
    else:
        doc = load_roundtrip(tmpl.data, what)
        text = dump_roundtrip(apply_changes(doc, plain))
    return PreparedTemplate(tmpl.name, text, plain)


def load_config(doc: dict[str, Any], file_path: str, *, warn: bool = False,
                what: str | None = None) -> Loaded:
    return load_document(doc, file_path, host_facts(), read_config_files(), what=what)


def check_config(doc: dict[str, Any], file_path: str, *, warn: bool = True) -> Loaded:
    """Load (with defaults) and validate; returns the filled config and warnings."""
    loaded = load_config(doc, file_path, warn=warn)
    _check_vm_type_registered(loaded.config)
    from pylima.store.networks import network_modes

    loaded.warnings += validate_or_raise(loaded.config, LIMA_COMPAT_VERSION, warn=warn,
                                         path_kind=path_kind, network_modes=network_modes)
    if warn:
        loaded.warnings += _beyond_host_warnings(loaded.config)
    return loaded


def _beyond_host_warnings(cfg: dict[str, Any]) -> list[str]:
    """QEMU accepts more CPUs or memory than the host has (and so does Lima); say so."""
    from pylima.config.units import format_size, parse_size

    host = host_facts()
    out = []
    if int(cfg.get("cpus") or 0) > host.cpus:
        out.append(f"field `cpus` is {cfg['cpus']}, more than the host's {host.cpus} CPUs")
    try:
        mem = parse_size(cfg.get("memory") or 0)
    except ValueError:
        return out
    if mem > host.memory:
        out.append(f"field `memory` is {format_size(mem)}, more than the host's "
                   f"{format_size(host.memory)}")
    return out


def resolve_create_source(arg: str | None, name: str | None) -> Template:
    """Lima's rules for `limactl create/start [ARG] [--name NAME]`."""
    if arg == "-" and not name:
        raise LimaError("must pass instance name with --name when reading template from stdin")
    if arg is None or (arg and validate_instance_name(arg) is None):
        inst_name = name or DEFAULT_INSTANCE_NAME
        if arg:
            if name and name != arg:
                raise LimaError(f"instance name `{arg}` and CLI flag --name=`{name}` cannot be "
                                "specified together")
            inst_name = arg
            if arg != DEFAULT_INSTANCE_NAME and not (dirs.instance_dir(arg)).exists():
                log.info("Creating an instance `%s` from template:default (Not from "
                         "template:%s)", arg, arg)
                log.warning("This form is deprecated. Use `limactl create --name=%s "
                            "template:default` instead", arg)
        return read_template("template:default", name=inst_name)
    return read_template(arg, name=name or "")


def create_instance(source: Template, flags: EditFlags | None = None) -> Instance:
    """Create instance `source.name` from a template. Nothing is left behind on error."""
    name = source.name
    reason = validate_instance_name(name)
    if reason:
        raise LimaError(reason)
    inst_dir = dirs.instance_dir(name)
    if inst_dir.exists():
        raise InstanceError(f"instance `{name}` already exists",
                            hint=f"use `limactl start {name}` to start it")
    flags = flags or EditFlags()
    # params are declared by the template (after base: is resolved)
    declared = None
    if flags.param:
        declared = (prepare_template(source, []).doc.get("param") or {})
    exprs, warnings = yq_expressions(flags, new_instance=True, declared_params=declared,
                                     home=host_facts().home, cwd=os.getcwd())
    for w in warnings:
        log.warning(w)
    prepared = prepare_template(source, exprs)
    yaml_path = str(inst_dir / dirs.LIMA_YAML)
    loaded = check_config(prepared.doc, yaml_path)
    # Refusals first, so that a guest this host cannot run gets one line and no
    # warnings about settings that will never apply.
    _check_guest_os_supported(loaded.config)
    _check_vm_type_host(loaded.config)
    for w in loaded.warnings:
        log.warning(w)
    _check_driver_can_run(loaded.config)

    from pylima.store.sshkey import ensure_user_key

    home = dirs.lima_home()
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    ensure_user_key()
    with instance_lock(name), _staged_instance_dir(name) as tmp:
        (tmp / dirs.LIMA_YAML).write_text(prepared.text)
        (tmp / dirs.LIMA_VERSION).write_text(LIMA_COMPAT_VERSION + "\n")
    return inspect(name)


def get_instance(name: str) -> Instance:
    return inspect(name)


def list_instances() -> list[Instance]:
    out = []
    for n in instance_names():
        try:
            out.append(inspect(n))
        except InstanceNotFound:
            continue
    return out


def instance_processes(inst: Instance, *, lock_held: bool = False) -> list[int]:
    """Every process of the instance: the host agent and the driver (by their pid
    files), and whatever holds the instance lock or has a file of the instance
    directory open (QEMU holds its disk), found in /proc. With `lock_held` (the caller
    holds the lock) other openers of the lock file are only waiting for it, and do
    not count."""
    from pylima.store.instance import read_pid_file
    from pylima.store.lock import lock_holders, processes_using

    pids = [read_pid_file(inst.dir / dirs.HA_PID, "hostagent"),
            read_pid_file(inst.dir / dirs.QEMU_PID, f"lima-{inst.name}")]
    if not lock_held:
        pids += lock_holders(inst.name)
    pids += processes_using([], [inst.dir])
    me = os.getpid()
    return sorted({p for p in pids if p and p != me and pid_alive(p)})


def kill_instance_processes(inst: Instance, timeout: float = 10.0, *,
                            lock_held: bool = False) -> None:
    """SIGKILL every process of the instance, then verify that none is left (the
    kernel then has released the instance lock and QEMU's disk lock)."""
    deadline = time.monotonic() + timeout
    while True:
        pids = instance_processes(inst, lock_held=lock_held)
        if not pids:
            return
        if time.monotonic() > deadline:
            raise InstanceError(f"processes {', '.join(map(str, pids))} of instance "
                                f"`{inst.name}` are still running after SIGKILL",
                                hint="they may belong to another user; stop them by hand")
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def delete_instance(inst: Instance, force: bool = False) -> None:
    """Remove the instance directory. With `force`, its processes are killed first
    (and verified gone); a directory still in use by a process is never removed."""
    if inst.protected:
        raise InstanceError("instance is protected to prohibit accidental removal "
                            "(Hint: use `limactl unprotect`)")
    if not force and inst.status != STATUS_STOPPED and inst.config is not None:
        raise InstanceError(f"expected status `{STATUS_STOPPED}`, got `{inst.status}`",
                            hint=f"run `limactl stop {inst.name}` first, or use `--force`")
    if force:
        kill_instance_processes(inst)
    with instance_lock(inst.name):
        users = instance_processes(inst, lock_held=True)
        if users:
            raise InstanceError(f"instance `{inst.name}` is in use by process "
                                f"{', '.join(map(str, users))}; not deleting it",
                                hint=f"run `limactl stop {inst.name}` first, or use `--force`")
        _unlock_disks(inst)
        _delete_driver_data(inst, force)
        # rename first so that a half-deleted directory never looks like an instance
        trash = inst.dir.with_name(f".{inst.name}.deleting-{os.getpid()}")
        os.rename(inst.dir, trash)
        shutil.rmtree(trash)
        from pylima.store.usernet import release_instance

        release_instance(inst.name)  # its user-v2 addresses are free again


def _delete_driver_data(inst: Instance, force: bool) -> None:
    """What the driver keeps outside the instance directory (libvirt: the domain and
    volumes on the libvirt host), before the directory goes: a failure keeps the
    instance (so that `delete` can be run again), unless `force`."""
    if inst.config is None or inst.vm_type in ("qemu", "vz", "wsl2", ""):
        return
    from pylima.drivers import registry

    try:
        for what in registry.delete_instance(inst.name, inst.dir, inst.config):
            log.info("Deleted %s", what)
    except LimaError as e:
        if not force:
            raise LimaError(f"cannot delete instance `{inst.name}`: {e.message}",
                            hint=e.hint or "use `--force` to delete the instance anyway") \
                from None
        log.warning("%s (deleting the instance anyway)", e.message)


def protect_instance(inst: Instance) -> bool:
    """Returns False when it was already protected."""
    p = inst.dir / dirs.PROTECTED
    if os.path.lexists(p):
        return False
    p.write_bytes(b"")
    os.chmod(p, 0o400)
    return True


def unprotect_instance(inst: Instance) -> bool:
    p = inst.dir / dirs.PROTECTED
    if not os.path.lexists(p):
        return False
    p.unlink()
    return True


# Files that belong to one running VM and must not follow a clone (Lima's SkipOnClone).
_SKIP_ON_CLONE = {dirs.HA_PID, dirs.HA_SOCK, dirs.HA_STDOUT_LOG, dirs.HA_STDERR_LOG,
                  dirs.QEMU_PID, dirs.QMP_SOCK, dirs.SERIAL_LOG, dirs.SERIALV_LOG,
                  dirs.SSH_SOCK, dirs.SSH_CONFIG, dirs.GA_SOCK, dirs.CIDATA_ISO,
                  dirs.PROTECTED, "serialp.log", "vz-identifier", "vz-efi"}


def _check_rename_target(old: Instance, new_name: str, verb: str) -> Path:
    """Shared checks of clone and rename: a valid, free name and a stopped source."""
    reason = validate_instance_name(new_name)
    if reason:
        raise LimaError(reason)
    if old.status != STATUS_STOPPED:
        raise InstanceError(f"instance `{old.name}` must be stopped to be {verb}",
                            hint=f"run `limactl stop {old.name}` first")
    new_dir = dirs.instance_dir(new_name)
    if new_dir.exists():
        raise InstanceError(f"instance `{new_name}` already exists")
    return new_dir


@contextlib.contextmanager
def _staged_instance_dir(name: str) -> Iterator[Path]:
    """A hidden directory that becomes instance NAME only when the block succeeds, so
    that no failure leaves a half-made instance behind."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.creating-", dir=dirs.lima_home()))
    try:
        yield tmp
        os.chmod(tmp, 0o700)
        try:
            os.rename(tmp, dirs.instance_dir(name))
        except OSError as e:
            raise InstanceError(f"instance `{name}` already exists") from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def clone_instance(old: Instance, new_name: str, flags: EditFlags | None = None) -> Instance:
    from pylima.images.fileutil import link_or_copy

    _check_rename_target(old, new_name, "cloned")
    with instance_lock(old.name), instance_lock(new_name), \
            _staged_instance_dir(new_name) as tmp:
        for entry in os.scandir(old.dir):
            if entry.name in _SKIP_ON_CLONE or entry.name.endswith((".pid", ".sock", ".tmp")):
                continue
            src, dst = Path(entry.path), tmp / entry.name
            if entry.is_dir(follow_symlinks=False):
                shutil.copytree(src, dst, symlinks=True)
            elif entry.is_symlink():
                os.symlink(os.readlink(src), dst)
            else:
                # never a hard link: the clone's disk is written independently
                link_or_copy(src, dst, allow_hardlink=False)
                shutil.copymode(src, dst)
        if flags is not None:
            _edit_file(tmp / dirs.LIMA_YAML, flags, new_name)
    return inspect(new_name)


def rename_instance(old: Instance, new_name: str) -> Instance:
    new_dir = _check_rename_target(old, new_name, "renamed")
    with instance_lock(old.name), instance_lock(new_name):
        for f in (dirs.SSH_CONFIG, dirs.CIDATA_ISO):
            (old.dir / f).unlink(missing_ok=True)
        os.rename(old.dir, new_dir)
        from pylima.store.usernet import release_instance

        release_instance(old.name)  # the new name (and MAC) leases anew at its start
    return inspect(new_name)


def _edit_file(path: Path, flags: EditFlags, name: str, *, new_instance: bool = False,
               write: bool = True) -> str:
    data = path.read_bytes()
    what = f"main file `{path}`"
    plain = parse_yaml(data, what)
    exprs, warnings = yq_expressions(flags, new_instance=new_instance,
                                     declared_params=plain.get("param") or {},
                                     home=host_facts().home, cwd=os.getcwd())
    for w in warnings:
        log.warning(w)
    if not exprs:
        return data.decode()
    new_plain = evaluate_one(" | ".join(exprs), plain, what="yq expression")
    text = dump_roundtrip(apply_changes(load_roundtrip(data, what), new_plain))
    check_config(to_plain(new_plain), str(path))
    if write:
        path.write_text(text)
    return text


def check_edit_flags(inst: Instance, flags: EditFlags) -> None:
    """Raise what `edit_instance_with_flags` would raise, changing nothing (a command
    that edits after another step, such as a stop, checks first: bad flags then stop
    nothing). The instance may be running."""
    _edit_file(inst.dir / dirs.LIMA_YAML, flags, inst.name, write=False)


def edit_instance_with_flags(inst: Instance, flags: EditFlags) -> bool:
    """Apply edit flags to a stopped instance's lima.yaml (comments kept).
    Returns whether anything changed."""
    if inst.status not in (STATUS_STOPPED, "Broken"):
        raise InstanceError("cannot edit a running instance",
                            hint=f"run `limactl stop {inst.name}` first")
    path = inst.dir / dirs.LIMA_YAML
    with instance_lock(inst.name):
        before = path.read_text()
        after = _edit_file(path, flags, inst.name)
    return before != after


def save_edited_yaml(inst: Instance, text: str) -> None:
    """Validate new lima.yaml text for `inst` and write it; the old file stays on error."""
    path = inst.dir / dirs.LIMA_YAML
    doc = parse_yaml(text, f"main file `{path}`")
    check_config(doc, str(path))
    with instance_lock(inst.name):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)


# ---------------------------------------------------------------- lifecycle

# Image lists that the local Debian image may stand in for, when none can be
# downloaded (offline hosts): the Debian and Ubuntu cloud images of the built-in
# templates. Other distributions are not silently replaced.
_LOCAL_FALLBACK_HOSTS = ("cloud.debian.org", "cloud-images.ubuntu.com")


def _can_fall_back_to_local_image(cfg: dict[str, Any]) -> bool:
    locations = [str(i.get("location", "")) for i in cfg.get("images") or []
                 if isinstance(i, dict) and i.get("arch") == cfg.get("arch")]
    return bool(locations) and all(any(h in loc for h in _LOCAL_FALLBACK_HOSTS)
                                   for loc in locations)


# Guest sockets whose forwarding marks a configuration as running a container engine.
_ENGINE_SOCKETS = ("docker.sock", "podman.sock")


def local_image_variant(cfg: dict[str, Any]) -> str:
    """Which variant of the local Debian image (see `builder.VARIANTS`) an instance
    whose cloud image cannot be downloaded gets: the base image unless its
    configuration needs packages baked in.

    "docker" (docker.io, podman, containerd, rootlesskit, ...): the configuration
    forwards a docker or podman socket (a `portForwards[].guestSocket` ending in
    docker.sock or podman.sock), as template:docker, docker-rootful, podman and
    podman-rootful do, or asks for `containerd.system` (the distro's containerd
    stands in when the nerdctl archive cannot be downloaded).
    """
    for rule in cfg.get("portForwards") or []:
        if isinstance(rule, dict) and str(rule.get("guestSocket") or "").endswith(
                _ENGINE_SOCKETS):
            return "docker"
    if (cfg.get("containerd") or {}).get("system"):
        return "docker"
    scripts = [str(p.get("script") or "") for p in cfg.get("provision") or []
               if isinstance(p, dict)]
    # Fast mode (template:binfmt) installs QEMU user-mode emulation at boot.
    if any("qemu-user-static" in s for s in scripts):
        return "qemu-user"
    return ""


def prepare_instance(inst: Instance, on_progress: Any = None) -> None:
    """Make sure the instance has its base image (downloaded, or built locally when
    offline) and its disk. Idempotent; runs before the host agent so that download
    and build time is not counted against the boot timeout."""
    from pylima.config.units import parse_size
    from pylima.images.disk import ensure_instance_disk
    from pylima.images.download import DownloadError, ensure_instance_image

    cfg = inst.config
    if cfg is None:
        raise InstanceError(f"instance `{inst.name}` has errors: {'; '.join(inst.errors)}")
    try:
        ensure_instance_image(cfg["images"], cfg["arch"], inst.dir, on_progress=on_progress)
    except DownloadError as e:
        if not _can_fall_back_to_local_image(cfg):
            raise
        from pylima.images import builder

        variant = local_image_variant(cfg)
        built = builder.find_cached_image(arch=cfg["arch"], variant=variant)
        if built is None:
            ok, why = builder.can_build(cfg["arch"])
            if not ok:
                raise DownloadError(f"{e.message}; and no image can be built locally: {why}",
                                    hint="run `limactl image build debian-12`, or give "
                                    "`--set '.images=[...]'` with an image you have") from e
        log.warning("No image could be downloaded for %s; using a Debian 12 image built "
                    "locally from the host's apt mirror instead (built once, then cached)",
                    cfg["arch"])
        if built is None:
            log.info("Building the Debian 12 %s image%s (a few minutes, once)", cfg["arch"],
                     f" (variant `{variant}`)" if variant else "")
            built = builder.build_debian_image(arch=cfg["arch"], variant=variant,
                                               on_phase=lambda p: log.info("Image build: %s", p))
        ensure_instance_image([builder.images_entry(built)], cfg["arch"], inst.dir,
                              on_progress=on_progress)
    from pylima.drivers import registry

    if registry.uses_local_disk(cfg):
        ensure_instance_disk(inst.dir, parse_size(cfg["disk"]))
    from pylima.containers.archive import ensure_archive

    ensure_archive(cfg, on_progress=on_progress)


def spawn_host_agent(inst: Instance, debug: bool = False, lock_fd: int | None = None,
                     progress: bool = False) -> int:
    """Start `limactl hostagent NAME` detached; its stdout/stderr go to ha.*.log. The
    instance lock `lock_fd` (held by the caller) is handed over to it. `progress`:
    the guest's boot log comes as events (`limactl start --progress`)."""
    import subprocess
    import sys

    for f in (dirs.HA_STDOUT_LOG, dirs.HA_STDERR_LOG):
        (inst.dir / f).unlink(missing_ok=True)
    argv = [sys.executable, "-m", "pylima"]
    if debug:
        argv.append("--debug")
    argv += ["hostagent", "--pidfile", str(inst.dir / dirs.HA_PID),
             "--socket", str(inst.dir / dirs.HA_SOCK)]
    if lock_fd is not None:
        argv += ["--lock-fd", str(lock_fd)]
    if progress:
        argv.append("--progress")
    argv.append(inst.name)
    out_fd = os.open(inst.dir / dirs.HA_STDOUT_LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                     0o600)
    err_fd = os.open(inst.dir / dirs.HA_STDERR_LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                     0o600)
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out_fd, stderr=err_fd,
                                start_new_session=True, close_fds=True,
                                pass_fds=(lock_fd,) if lock_fd is not None else ())
    finally:
        os.close(out_fd)
        os.close(err_fd)
    return proc.pid


def watch_events(inst: Instance, timeout: float, on_event: Any = None,
                 agent_pid: int | None = None) -> dict[str, Any]:
    """Follow ha.stdout.log until an event says running or exiting; returns it."""
    from pylima.hostagent.events import parse_event

    path = inst.dir / dirs.HA_STDOUT_LOG
    deadline = time.monotonic() + timeout
    offset = 0
    buf = ""
    while True:
        try:
            with open(path) as f:
                f.seek(offset)
                chunk = f.read()
                offset = f.tell()
        except FileNotFoundError:
            chunk = ""
        buf += chunk
        while "\n" in buf:
            line, buf = buf.split("\n", 1)
            ev = parse_event(line)
            if ev is None:
                continue
            if on_event:
                on_event(ev)
            st = ev["status"]
            if st.get("running") or st.get("exiting"):
                return ev
        if agent_pid is not None and not pid_alive(agent_pid) and not chunk:
            raise InstanceError("host agent process has exited",
                                hint=f"see `{inst.dir / dirs.HA_STDERR_LOG}`")
        if time.monotonic() > deadline:
            raise InstanceError(
                "did not receive an event with the `running` status",
                hint=f"the instance is left running: see `{inst.dir / dirs.SERIAL_LOG}` and "
                f"`{inst.dir / dirs.HA_STDERR_LOG}`, and `limactl stop {inst.name}`")
        time.sleep(0.2)


def stop_instance(inst: Instance, force: bool = False, timeout: float = 180.0) -> None:
    """Ask the host agent to power the VM off (ACPI over QMP) and wait until it, the
    VM and every helper are gone and the instance lock is free; with `force` (or
    after `timeout`), kill every process of the instance and verify. Runtime files
    are removed only once nothing owns the instance."""
    if force or not inst.host_agent_pid:
        kill_instance_processes(inst)
    else:
        os.kill(inst.host_agent_pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while pid_alive(inst.host_agent_pid):
            if time.monotonic() > deadline:
                log.warning("The host agent did not exit in %d s; killing it", int(timeout))
                break
            time.sleep(0.1)
        # The agent's children die with it; anything else is killed and checked.
        kill_instance_processes(inst)
    with instance_lock(inst.name, timeout=10):
        _remove_runtime_files(inst)


def _unlock_disks(inst: Instance) -> None:
    """The additional disks a killed host agent left locked to the instance (Lima's
    StopForcibly unlocks them too). Call once no process of the instance is left."""
    if inst.config:
        from pylima.images.disk import unlock_instance_disks

        unlock_instance_disks(inst.config, inst.dir)


def _remove_runtime_files(inst: Instance) -> None:
    """Pid files and sockets a killed host agent or VM left (call with the lock)."""
    _unlock_disks(inst)
    for f in (dirs.HA_PID, dirs.HA_SOCK, dirs.QEMU_PID, dirs.QMP_SOCK, dirs.SSH_SOCK,
              dirs.GA_SOCK, dirs.PORT_FORWARDS):
        with contextlib.suppress(OSError):
            (inst.dir / f).unlink()


_LOGRUS = re.compile(r'level=(\w+) msg="((?:[^"\\]|\\.)*)"')


class HostAgentLogRelay:
    """Pass the host agent's log lines (ha.stderr.log) on to logging as
    `[hostagent] ...` while a start waits, as `limactl start` shows them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> HostAgentLogRelay:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=2)

    def _run(self) -> None:
        import json

        # the CLI's logger, so that the lines look the same as the CLI's own
        relay_log = logging.getLogger("pylima")
        offset = 0
        while True:
            stopping = self.stop.is_set()
            try:
                with open(self.path) as f:
                    f.seek(offset)
                    data = f.read()
                    offset = f.tell()
            except FileNotFoundError:
                data = ""
            for line in data.splitlines():
                m = _LOGRUS.search(line)
                if not m:
                    continue
                level, msg = m.group(1), json.loads(f'"{m.group(2)}"')
                lvl = {"debug": logging.DEBUG, "warning": logging.WARNING,
                       "error": logging.ERROR, "fatal": logging.ERROR}.get(level, logging.INFO)
                relay_log.log(lvl, "[hostagent] %s", msg)
            if stopping:
                return
            self.stop.wait(0.2)


def prepare_start(inst: Instance, on_progress: Any = None) -> Instance:
    """Everything a start does before the host agent runs, with the instance lock
    held by the caller: end what a crash left (processes of the instance, stale pid
    files and sockets), fetch the image and make the disk. Returns the instance
    inspected afresh."""
    if inst.config is not None:
        # an instance made by Lima (or an older pylima) for a guest pylima cannot boot
        _check_guest_os_supported(inst.config)
    kill_instance_processes(inst, lock_held=True)
    _remove_runtime_files(inst)
    if inst.config is not None:
        # Fail before anything is downloaded or spawned: a missing disk, or one that
        # another instance holds (the host agent locks them, and checks again).
        from pylima.images.disk import check_instance_disks

        check_instance_disks(inst.config, inst.dir)
        from pylima.drivers import registry

        registry.check_start(inst.config)  # e.g. `tpm: true` without swtpm: one line
    prepare_instance(inst, on_progress=on_progress)
    inst = inspect(inst.name)
    logging.getLogger("pylima").info("Starting the instance `%s` with internal VM driver "
                                     "`%s`", inst.name, inst.vm_type)
    return inst


def start_instance(inst: Instance, timeout: float = 600.0, *, debug: bool = False,
                   on_progress: Any = None, on_event: Any = None,
                   progress: bool = False) -> Instance:
    """Start a stopped instance and wait (up to `timeout` seconds) until the guest is
    ready: the work of `limactl start`. When another process is starting it (or it
    runs already), wait for that one instead. Raises InstanceError when the host agent
    exits, the guest comes up degraded or the timeout passes. Returns the instance
    inspected afresh."""
    return start_or_join(inst, timeout, debug=debug, on_progress=on_progress,
                         on_event=on_event, progress=progress)[0]


def start_or_join(inst: Instance, timeout: float = 600.0, *, debug: bool = False,
                  on_progress: Any = None, on_event: Any = None,
                  progress: bool = False) -> tuple[Instance, bool]:
    """`start_instance`, and whether this call started the instance (False: it was
    running, or another process started it and this call waited until READY).

    One owner: the instance lock decides who starts. The winner prepares the disk
    and hands the lock over to the host agent it spawns; everyone else follows the
    owner's events until READY (or reports the owner's failure)."""
    from pylima.store.instance import read_pid_file
    from pylima.store.lock import try_lock

    deadline = time.monotonic() + timeout
    said = False
    while True:
        fd = try_lock(inst.name)
        if fd is not None:
            try:
                inst = inspect(inst.name)
                if inst.status == STATUS_RUNNING:
                    return inst, False  # a host agent from before instance locks
                inst = prepare_start(inst, on_progress=on_progress)
                pid = spawn_host_agent(inst, debug=debug, lock_fd=fd, progress=progress)
            finally:
                os.close(fd)  # the host agent holds the lock from here on
            ev = _follow_host_agent(inst, max(1.0, deadline - time.monotonic()), on_event,
                                    pid)
            _check_ready(inst, ev)
            return inspect(inst.name), True
        agent = read_pid_file(inst.dir / dirs.HA_PID, "hostagent")
        if agent:
            if not said:
                log.info("The instance `%s` is being started by another process (host agent "
                         "%d); waiting until it is ready", inst.name, agent)
            ev = _follow_host_agent(inst, max(1.0, deadline - time.monotonic()), on_event,
                                    agent, relay=False)
            _check_ready(inst, ev)
            return inspect(inst.name), False
        if not said:
            log.info("Another process is working on the instance `%s`; waiting for it",
                     inst.name)
            said = True
        if time.monotonic() > deadline:
            raise InstanceError(f"instance `{inst.name}` stayed busy with another process "
                                f"for {int(timeout)} s", hint="retry when it has finished")
        time.sleep(0.2)


def _follow_host_agent(inst: Instance, timeout: float, on_event: Any, pid: int, *,
                       relay: bool = True) -> dict[str, Any]:
    if not relay:
        return watch_events(inst, timeout, on_event=on_event, agent_pid=pid)
    with HostAgentLogRelay(inst.dir / dirs.HA_STDERR_LOG):
        return watch_events(inst, timeout, on_event=on_event, agent_pid=pid)


def _check_ready(inst: Instance, ev: dict[str, Any]) -> None:
    st = ev["status"]
    if st.get("exiting"):
        raise InstanceError(f"exiting, status={st}",
                            hint=f"see `{inst.dir / dirs.HA_STDERR_LOG}`")
    if st.get("degraded"):
        logging.getLogger("pylima").warning(
            "DEGRADED. The VM seems running, but file sharing and port forwarding may not "
            "work. (hint: see `%s`)", inst.dir / dirs.HA_STDERR_LOG)
        raise InstanceError(f"degraded, status={st}")


# ---- snapshots and the SOCKS tunnel ----

SNAPSHOT_ACTIONS = ("create", "apply", "delete", "list")
# savevm/loadvm of a guest's whole memory, under emulation, can take minutes.
SNAPSHOT_TIMEOUT = 1800.0


def snapshot_instance(inst: Instance, action: str, tag: str = "") -> str:
    """`create`, `apply`, `delete` (with `tag`) or `list` the snapshots of `inst`, as
    Lima's `limactl snapshot`; the table for `list`, else "".

    A running instance is snapshotted by its host agent, which owns the VM (with the
    memory state; it resumes where it was after `apply`); any other is snapshotted on
    its disk under the instance lock, so that nothing starts it meanwhile."""
    import asyncio

    from pylima.drivers import Snapshotter, check_snapshot_tag, registry

    if action not in SNAPSHOT_ACTIONS:
        raise LimaError(f"unknown snapshot action `{action}`")
    if action != "list":
        check_snapshot_tag(tag)
    cfg = inst.config or {}
    try:
        drv = registry.new_driver(inst.name, inst.dir, cfg)
    except LimaError as e:
        raise LimaError(f"failed to create driver instance: {e.message}", e.hint) from e
    if not isinstance(drv, Snapshotter):
        raise LimaError(f"driver `{inst.vm_type}` does not support snapshots")
    if inst.status == STATUS_RUNNING:
        from pylima.hostagent.client import call

        reply = call(inst.dir, inst.name, "POST", "/v1/snapshot",
                     {"action": action, "tag": tag}, timeout=SNAPSHOT_TIMEOUT)
        return str(reply.get("output") or "")
    with instance_lock(inst.name):
        if action == "list":
            return str(asyncio.run(drv.list_snapshots(running=False)))
        op = {"create": drv.create_snapshot, "apply": drv.apply_snapshot,
              "delete": drv.delete_snapshot}[action]
        asyncio.run(op(tag, running=False))
    return ""


def check_socks_port(port: int) -> None:
    """Lima's rule: 0 (any free port) or 1024-65535."""
    if port != 0 and not 1024 <= port <= 65535:
        raise LimaError(f"invalid socks port {port}")


def open_socks_tunnel(inst: Instance, port: int = 0) -> int:
    """A SOCKS5 proxy on 127.0.0.1:`port` (0: a free one) into the guest's network,
    opened by the host agent on its SSH master (`ssh -O forward -D`): it lasts until
    `close_socks_tunnel` or until the instance stops (a renewed master gets it again).
    Returns the port."""
    from pylima.hostagent.client import call
    from pylima.sshutil import free_port

    check_socks_port(port)
    if inst.status == STATUS_STOPPED:
        raise InstanceError(f"instance `{inst.name}` is stopped, run `limactl start "
                            f"{inst.name}` to start the instance")
    port = port or free_port()
    call(inst.dir, inst.name, "POST", "/v1/tunnel", {"port": port}, timeout=60)
    return port


def close_socks_tunnel(inst: Instance, port: int) -> None:
    """Close a tunnel `open_socks_tunnel` opened."""
    from pylima.hostagent.client import call

    call(inst.dir, inst.name, "POST", "/v1/tunnel", {"port": port, "close": True},
         timeout=60)
