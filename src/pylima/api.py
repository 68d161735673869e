"""pylima's Python API. The CLI calls these functions; they raise LimaError and
never print (progress and warnings go to logging)."""

from __future__ import annotations

import logging
import os
import platform
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pylima import LIMA_COMPAT_VERSION
from pylima.config.editflags import EditFlags, yq_expressions
from pylima.config.load import Loaded, load_document, validate_or_raise
from pylima.config.locator import Template, embed_bases, read_template
from pylima.config.yamlio import apply_changes, dump_roundtrip, load_roundtrip, parse_yaml, to_plain
from pylima.config.yq import evaluate_one
from pylima.errors import ConfigError, InstanceError, InstanceNotFound, LimaError
from pylima.hostinfo import host_facts
from pylima.names import validate_instance_name
from pylima.store import dirs
from pylima.store.instance import STATUS_STOPPED, Instance, inspect, instance_names
from pylima.store.lock import instance_lock

log = logging.getLogger(__name__)

DEFAULT_INSTANCE_NAME = "default"


@dataclass
class PreparedTemplate:
    """A template ready to become an instance: its YAML text (comments kept), parsed."""

    name: str
    text: str
    doc: dict[str, Any]


def _check_driver_can_run(cfg: dict[str, Any]) -> None:
    from pylima.drivers import check_vm_type_supported

    check_vm_type_supported(cfg, platform.system(), platform.machine())


def prepare_template(tmpl: Template, expressions: list[str]) -> PreparedTemplate:
    """Resolve `base:` and apply yq expressions, keeping the template's comments."""
    what = f"template `{tmpl.locator}`"
    original = parse_yaml(tmpl.data, what)
    plain = embed_bases(original, tmpl.locator) if original.get("base") else original
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
    return load_document(doc, file_path, host_facts(), str(dirs.config_dir()), what=what)


def check_config(doc: dict[str, Any], file_path: str, *, warn: bool = True) -> Loaded:
    """Load (with defaults) and validate; returns the filled config and warnings."""
    loaded = load_config(doc, file_path, warn=warn)
    loaded.warnings += validate_or_raise(loaded.config, LIMA_COMPAT_VERSION, warn=warn)
    return loaded


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
                                     home=host_facts().home)
    for w in warnings:
        log.warning(w)
    prepared = prepare_template(source, exprs)
    yaml_path = str(inst_dir / dirs.LIMA_YAML)
    loaded = check_config(prepared.doc, yaml_path)
    for w in loaded.warnings:
        log.warning(w)
    _check_driver_can_run(loaded.config)
    if loaded.config.get("os") not in (None, "Linux"):
        log.warning("Support for non-Linux guests is experimental")

    from pylima.store.sshkey import ensure_user_key

    home = dirs.lima_home()
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    ensure_user_key()
    with instance_lock(name):
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.creating-", dir=home))
        try:
            (tmp / dirs.LIMA_YAML).write_text(prepared.text)
            (tmp / dirs.LIMA_VERSION).write_text(LIMA_COMPAT_VERSION + "\n")
            os.chmod(tmp, 0o700)
            try:
                os.rename(tmp, inst_dir)
            except OSError as e:
                raise InstanceError(f"instance `{name}` already exists") from e
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
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


def _kill_pids(inst: Instance) -> None:
    for pid in (inst.host_agent_pid, inst.driver_pid):
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        alive = False
        for pid in (inst.host_agent_pid, inst.driver_pid):
            if pid:
                try:
                    os.kill(pid, 0)
                    alive = True
                except ProcessLookupError:
                    pass
        if not alive:
            return
        time.sleep(0.05)


def delete_instance(inst: Instance, force: bool = False) -> None:
    if inst.protected:
        raise InstanceError("instance is protected to prohibit accidental removal "
                            "(Hint: use `limactl unprotect`)")
    if not force and inst.status != STATUS_STOPPED and inst.config is not None:
        raise InstanceError(f"expected status `{STATUS_STOPPED}`, got `{inst.status}`",
                            hint=f"run `limactl stop {inst.name}` first, or use `--force`")
    with instance_lock(inst.name):
        if force:
            _kill_pids(inst)
        # rename first so that a half-deleted directory never looks like an instance
        trash = inst.dir.with_name(f".{inst.name}.deleting-{os.getpid()}")
        os.rename(inst.dir, trash)
        shutil.rmtree(trash)


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


def clone_instance(old: Instance, new_name: str, flags: EditFlags | None = None) -> Instance:
    reason = validate_instance_name(new_name)
    if reason:
        raise LimaError(reason)
    if old.status != STATUS_STOPPED:
        raise InstanceError(f"instance `{old.name}` must be stopped to be cloned",
                            hint=f"run `limactl stop {old.name}` first")
    new_dir = dirs.instance_dir(new_name)
    if new_dir.exists():
        raise InstanceError(f"instance `{new_name}` already exists")
    with instance_lock(old.name), instance_lock(new_name):
        tmp = Path(tempfile.mkdtemp(prefix=f".{new_name}.creating-", dir=dirs.lima_home()))
        try:
            for entry in os.scandir(old.dir):
                if entry.name in _SKIP_ON_CLONE or entry.name.endswith((".pid", ".sock", ".tmp")):
                    continue
                src, dst = Path(entry.path), tmp / entry.name
                if entry.is_dir(follow_symlinks=False):
                    shutil.copytree(src, dst, symlinks=True)
                else:
                    _copy_file(src, dst)
            if flags is not None:
                _edit_file(tmp / dirs.LIMA_YAML, flags, new_name)
            os.chmod(tmp, 0o700)
            os.rename(tmp, new_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return inspect(new_name)


def _copy_file(src: Path, dst: Path) -> None:
    """Reflink where the file system allows (disks are big), else a plain copy."""
    from pylima import process

    if src.is_symlink():
        os.symlink(os.readlink(src), dst)
        return
    try:
        process.run(["cp", "--reflink=auto", "--sparse=always", "--preserve=mode",
                     str(src), str(dst)])
    except LimaError:
        shutil.copy2(src, dst)


def rename_instance(old: Instance, new_name: str) -> Instance:
    reason = validate_instance_name(new_name)
    if reason:
        raise LimaError(reason)
    if old.status != STATUS_STOPPED:
        raise InstanceError(f"instance `{old.name}` must be stopped to be renamed",
                            hint=f"run `limactl stop {old.name}` first")
    new_dir = dirs.instance_dir(new_name)
    if new_dir.exists():
        raise InstanceError(f"instance `{new_name}` already exists")
    with instance_lock(old.name), instance_lock(new_name):
        for f in (dirs.SSH_CONFIG, dirs.CIDATA_ISO):
            (old.dir / f).unlink(missing_ok=True)
        os.rename(old.dir, new_dir)
    return inspect(new_name)


def _edit_file(path: Path, flags: EditFlags, name: str, *, new_instance: bool = False) -> str:
    data = path.read_bytes()
    what = f"main file `{path}`"
    plain = parse_yaml(data, what)
    exprs, warnings = yq_expressions(flags, new_instance=new_instance,
                                     declared_params=plain.get("param") or {},
                                     home=host_facts().home)
    for w in warnings:
        log.warning(w)
    if not exprs:
        return data.decode()
    new_plain = evaluate_one(" | ".join(exprs), plain, what="yq expression")
    text = dump_roundtrip(apply_changes(load_roundtrip(data, what), new_plain))
    check_config(to_plain(new_plain), str(path))
    path.write_text(text)
    return text


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
