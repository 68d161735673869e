"""`colima`: a Colima-style front end over pylima's API (the everyday subset).

As Colima does, it keeps its instances in its own Lima home, `~/.colima/_lima`
($COLIMA_HOME/_lima), names them `colima` (profile "default") or `colima-PROFILE`,
forwards the engine's socket to `~/.colima/PROFILE/docker.sock` (containerd.sock for
the containerd runtime) and points a docker context of the instance's name at it.

  colima start [--profile P] [--runtime docker|containerd] [--cpu N] [--memory GiB]
               [--disk GiB] [--arch A] [--vm-type qemu|vz] [--vz-rosetta]
               [--mount DIR[:w]]... [--mount-type sshfs|9p|virtiofs]
  colima stop | status | list | delete [-f] | ssh [-- CMD...]   (all take --profile)
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

log = logging.getLogger("pylima")

DEFAULT_PROFILE = "default"
RUNTIMES = ("docker", "containerd")
# Colima's mount type names -> Lima's.
MOUNT_TYPES = {"sshfs": "reverse-sshfs", "9p": "9p", "virtiofs": "virtiofs",
               "reverse-sshfs": "reverse-sshfs"}


def colima_home() -> Path:
    return Path(os.environ.get("COLIMA_HOME") or Path.home() / ".colima").expanduser()


def use_colima_lima_home() -> None:
    """Every pylima call of this process works in Colima's Lima home."""
    os.environ["LIMA_HOME"] = str(colima_home() / "_lima")


def profile_name(profile: str) -> str:
    """Colima's rule: `colima-` prefixes are accepted and dropped."""
    p = profile.strip() or DEFAULT_PROFILE
    return p.removeprefix("colima-") if p != "colima" else DEFAULT_PROFILE


def instance_name(profile: str) -> str:
    p = profile_name(profile)
    return "colima" if p == DEFAULT_PROFILE else f"colima-{p}"


def profile_dir(profile: str) -> Path:
    return colima_home() / profile_name(profile)


def socket_path(profile: str, runtime: str) -> Path:
    return profile_dir(profile) / ("containerd.sock" if runtime == "containerd"
                                   else "docker.sock")


def start_expressions(profile: str, runtime: str, rosetta: bool) -> list[str]:
    """yq expressions that turn the template into Colima's instance."""
    sock = json.dumps(str(socket_path(profile, runtime)))
    exprs = ['.message = ""']
    if runtime == "docker":
        exprs.append(f'.portForwards = [{{"guestSocket": "/var/run/docker.sock", '
                     f'"hostSocket": {sock}}}]')
    else:
        exprs += [".containerd.system = true", ".containerd.user = false",
                  f'.portForwards = [{{"guestSocket": "/run/containerd/containerd.sock", '
                  f'"hostSocket": {sock}}}]']
    if rosetta:
        exprs.append(".vmOpts.vz.rosetta.enabled = true")
    return exprs


def _runtime_of(inst: Any) -> str:
    cfg = inst.config or {}
    for rule in cfg.get("portForwards") or []:
        if isinstance(rule, dict) and str(rule.get("hostSocket") or "").endswith(
                "containerd.sock"):
            return "containerd"
    return "docker"


PROFILE_OPTION = click.option("-p", "--profile", default=DEFAULT_PROFILE, show_default=True,
                              help="profile name, for multiple instances")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Container runtimes on pylima: Colima's everyday commands."""
    use_colima_lima_home()


@cli.command("start")
@click.argument("profile_arg", required=False, metavar="[PROFILE]")
@PROFILE_OPTION
@click.option("-r", "--runtime", type=click.Choice(RUNTIMES), default="docker",
              show_default=True, help="container runtime")
@click.option("-c", "--cpu", "--cpus", "cpus", type=int, default=None,
              help="number of CPUs [default: 2]")
@click.option("-m", "--memory", type=float, default=None, help="memory in GiB [default: 2]")
@click.option("-d", "--disk", type=float, default=None, help="disk size in GiB [default: 100]")
@click.option("-a", "--arch", default=None, help="architecture (aarch64, x86_64)")
@click.option("-t", "--vm-type", type=click.Choice(["qemu", "vz"]), default=None,
              help="virtual machine type")
@click.option("--vz-rosetta", is_flag=True, help="use Rosetta for amd64 emulation (vz only)")
@click.option("-V", "--mount", "mounts", multiple=True, metavar="DIR[:w]",
              help="directory to mount, `:w` for writable (repeatable)")
@click.option("--mount-type", type=click.Choice(sorted(MOUNT_TYPES)), default=None,
              help="volume driver for the mounts")
@click.option("--timeout", type=float, default=900.0, show_default=True,
              help="seconds to wait for the instance")
def start(profile_arg: str | None, profile: str, runtime: str, cpus: int | None,
          memory: float | None, disk: float | None, arch: str | None, vm_type: str | None,
          vz_rosetta: bool, mounts: tuple[str, ...], mount_type: str | None,
          timeout: float) -> int:
    """Start Colima (creating the instance on first use)."""
    from pylima import api
    from pylima.config.editflags import EditFlags
    from pylima.containers.docker import ensure_context
    from pylima.errors import InstanceNotFound
    from pylima.store.instance import STATUS_RUNNING, inspect
    from pylima.templates.locator import read_template

    profile = profile_arg or profile
    name = instance_name(profile)
    log.info("starting colima%s", _profile_suffix(profile))
    try:
        inst = inspect(name)
        runtime = _runtime_of(inst)
    except InstanceNotFound:
        inst = None
    log.info("runtime: %s", runtime)
    if inst is None:
        flags = EditFlags(
            cpus=cpus or 2, memory=memory or 2.0, disk=disk or 100.0, arch=arch,
            vm_type=vm_type, mount_type=MOUNT_TYPES[mount_type] if mount_type else None,
            mount_only=tuple(mounts),
            set=tuple(start_expressions(profile, runtime, vz_rosetta)))
        template = "template:docker-rootful" if runtime == "docker" else "template:default"
        tmpl = read_template(template, name=name)
        inst = api.create_instance(tmpl, flags)
    profile_dir(profile).mkdir(parents=True, exist_ok=True)
    if inst.status == STATUS_RUNNING:
        log.info("colima is already running")
    else:
        log.info("starting ...  context=vm")
        api.start_instance(inst, timeout)
        inst = inspect(name)
    sock = socket_path(profile, runtime)
    if runtime == "docker":
        ensure_context(name, sock, name)
    log.info("done")
    return 0


@cli.command("stop")
@click.argument("profile_arg", required=False, metavar="[PROFILE]")
@PROFILE_OPTION
@click.option("-f", "--force", is_flag=True, help="stop without graceful shutdown")
def stop(profile_arg: str | None, profile: str, force: bool) -> int:
    """Stop Colima."""
    from pylima import api

    inst = _get(profile_arg or profile)
    log.info("stopping colima%s", _profile_suffix(profile_arg or profile))
    log.info("stopping ...  context=vm")
    api.stop_instance(inst, force=force)
    log.info("done")
    return 0


@cli.command("status")
@click.argument("profile_arg", required=False, metavar="[PROFILE]")
@PROFILE_OPTION
@click.option("-j", "--json", "as_json", is_flag=True, help="print json output")
def status(profile_arg: str | None, profile: str, as_json: bool) -> int:
    """Show the status of Colima."""
    from pylima.errors import LimaError
    from pylima.store.instance import STATUS_RUNNING

    profile = profile_arg or profile
    inst = _get(profile)
    if inst.status != STATUS_RUNNING:
        raise LimaError(f"{instance_name(profile)} is not running")
    runtime = _runtime_of(inst)
    cfg = inst.config or {}
    mount_type = cfg.get("mountType") or ""
    if mount_type == "reverse-sshfs":
        mount_type = "sshfs"
    sock = socket_path(profile, runtime)
    if as_json:
        click.echo(json.dumps({
            "display_name": instance_name(profile), "driver": "QEMU", "arch": inst.arch,
            "runtime": runtime, "mount_type": mount_type,
            "docker_socket": f"unix://{sock}" if runtime == "docker" else "",
            "containerd_socket": f"unix://{sock}" if runtime == "containerd" else "",
            "cpu": inst.cpus, "memory": inst.memory, "disk": inst.disk}))
        return 0
    log.info("%s is running using QEMU", instance_name(profile))
    log.info("arch: %s", inst.arch)
    log.info("runtime: %s", runtime)
    log.info("mountType: %s", mount_type)
    log.info("socket: unix://%s", sock)
    return 0


@cli.command("list")
@PROFILE_OPTION
@click.option("-j", "--json", "as_json", is_flag=True, help="print json output")
def list_cmd(profile: str, as_json: bool) -> int:
    """List the instances (profiles)."""
    from pylima.cli.listing import tabwrite
    from pylima.config.units import format_size
    from pylima.store.instance import inspect, instance_names

    rows = [["PROFILE", "STATUS", "ARCH", "CPUS", "MEMORY", "DISK", "RUNTIME", "ADDRESS"]]
    for n in instance_names():
        if n != "colima" and not n.startswith("colima-"):
            continue
        inst = inspect(n)
        prof = DEFAULT_PROFILE if n == "colima" else n.removeprefix("colima-")
        row = [prof, inst.status, inst.arch, str(inst.cpus), format_size(inst.memory),
               format_size(inst.disk), _runtime_of(inst) if inst.status == "Running" else "",
               ""]
        if as_json:
            click.echo(json.dumps(dict(zip([h.lower() for h in rows[0]], row, strict=True))))
        rows.append(row)
    if not as_json:
        sys.stdout.write(tabwrite(rows))
    return 0


@cli.command("delete")
@click.argument("profile_arg", required=False, metavar="[PROFILE]")
@PROFILE_OPTION
@click.option("-f", "--force", is_flag=True, help="do not prompt for yes/no")
def delete(profile_arg: str | None, profile: str, force: bool) -> int:
    """Delete Colima and its settings."""
    import shutil

    from pylima import api
    from pylima.containers.docker import remove_context

    profile = profile_arg or profile
    inst = _get(profile)
    if not force and not click.confirm(
            f"are you sure you want to delete {instance_name(profile)} and all settings?"):
        return 1
    log.info("deleting colima%s", _profile_suffix(profile))
    api.delete_instance(inst, force=True)
    remove_context(instance_name(profile))
    shutil.rmtree(profile_dir(profile), ignore_errors=True)
    log.info("done")
    return 0


@cli.command("ssh", context_settings={"ignore_unknown_options": True})
@PROFILE_OPTION
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def ssh(profile: str, command: tuple[str, ...]) -> int:
    """SSH into the VM, or run COMMAND there (after `--`)."""
    from pylima.cli.lima_cmd import main as lima_main

    inst = _get(profile)
    os.environ["LIMA_INSTANCE"] = inst.name
    rc = lima_main(list(command))
    return int(rc or 0)


def _profile_suffix(profile: str) -> str:
    p = profile_name(profile)
    return "" if p == DEFAULT_PROFILE else f" [profile={p}]"


def _get(profile: str) -> Any:
    from pylima.errors import InstanceNotFound, LimaError
    from pylima.store.instance import inspect

    name = instance_name(profile)
    try:
        return inspect(name)
    except InstanceNotFound:
        p = profile_name(profile)
        flag = "" if p == DEFAULT_PROFILE else f" --profile {p}"
        raise LimaError(f"{name} does not exist",
                        hint=f"run `colima start{flag}` to create it") from None


def main(argv: list[str] | None = None) -> Any:
    from pylima.cli.main import run

    sys.exit(run(cli, argv, prog_name="colima"))
