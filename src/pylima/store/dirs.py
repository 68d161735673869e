"""Paths of the Lima home and of the files in an instance directory (Lima's names)."""

from __future__ import annotations

import os
from pathlib import Path

# File names inside an instance directory, as Lima writes them.
LIMA_YAML = "lima.yaml"
LIMA_VERSION = "lima-version"
CIDATA_ISO = "cidata.iso"
IMAGE = "image"
DISK = "disk"
BASEDISK_LEGACY = "basedisk"
DIFFDISK_LEGACY = "diffdisk"
KERNEL = "kernel"
KERNEL_CMDLINE = "kernel.cmdline"
INITRD = "initrd"
QMP_SOCK = "qmp.sock"
SERIAL_LOG = "serial.log"
SERIALV_LOG = "serialv.log"
SSH_SOCK = "ssh.sock"
SSH_CONFIG = "ssh.config"
GA_SOCK = "ga.sock"
PORT_FORWARDS = "ha.portforwards.json"  # pylima: the active forwards, for `limactl list`
VIRTIO_PORT = "io.lima-vm.guest_agent.0"  # the guest agent's virtio-serial port name
HA_PID = "ha.pid"
HA_SOCK = "ha.sock"
HA_STDOUT_LOG = "ha.stdout.log"
HA_STDERR_LOG = "ha.stderr.log"
QEMU_PID = "qemu.pid"
PROTECTED = "protected"
SOCK_DIR = "sock"
LOCK_FILE = ".lock"

# Directories inside $LIMA_HOME.
CONFIG_DIR = "_config"
DISKS_DIR = "_disks"
TEMPLATES_DIR = "_templates"
NETWORKS_DIR = "_networks"
USER_KEY = "user"
DEFAULT_YAML = "default.yaml"
OVERRIDE_YAML = "override.yaml"


def lima_home() -> Path:
    """$LIMA_HOME, default ~/.lima (not created here)."""
    env = os.environ.get("LIMA_HOME")
    if env:
        return Path(env).expanduser().absolute()
    return Path.home() / ".lima"


def instance_dir(name: str) -> Path:
    return lima_home() / name


def config_dir() -> Path:
    return lima_home() / CONFIG_DIR


def disks_dir() -> Path:
    return lima_home() / DISKS_DIR


def user_templates_dir() -> Path:
    return lima_home() / TEMPLATES_DIR


def cache_dir() -> Path:
    """pylima's download/image cache, shared by all instances (XDG cache dir)."""
    env = os.environ.get("XDG_CACHE_HOME")
    base = Path(env) if env else Path.home() / ".cache"
    return base / "lima"
