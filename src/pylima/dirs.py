"""Paths of the Lima home and of the files in an instance directory (Lima's names).

The paths depend on the environment ($LIMA_HOME, $XDG_CACHE_HOME, the home
directory), so this is the outer layer: pure code names files with
`pylima.filenames` (re-exported here, so `dirs.LIMA_YAML` keeps working) and takes
directories as arguments.
"""

from __future__ import annotations

import os
from pathlib import Path

from pylima.filenames import (
    BASEDISK_LEGACY,
    CIDATA_ISO,
    CONFIG_DIR,
    DEFAULT_YAML,
    DIFFDISK_LEGACY,
    DISK,
    DISKS_DIR,
    GA_SOCK,
    HA_PID,
    HA_SOCK,
    HA_STDERR_LOG,
    HA_STDOUT_LOG,
    IMAGE,
    INITRD,
    KERNEL,
    KERNEL_CMDLINE,
    LIMA_VERSION,
    LIMA_YAML,
    LOCK_FILE,
    NETWORKS_DIR,
    OVERRIDE_YAML,
    PORT_FORWARDS,
    PROTECTED,
    QEMU_PID,
    QMP_SOCK,
    SERIAL_LOG,
    SERIALV_LOG,
    SOCK_DIR,
    SSH_CONFIG,
    SSH_SOCK,
    TEMPLATES_DIR,
    USER_KEY,
    VIRTIO_PORT,
)

__all__ = [
    "lima_home", "instance_dir", "config_dir", "disks_dir", "user_templates_dir", "cache_dir",
    "LIMA_YAML", "LIMA_VERSION", "CIDATA_ISO", "IMAGE", "DISK", "BASEDISK_LEGACY",
    "DIFFDISK_LEGACY", "KERNEL", "KERNEL_CMDLINE", "INITRD", "QMP_SOCK", "SERIAL_LOG",
    "SERIALV_LOG", "SSH_SOCK", "SSH_CONFIG", "GA_SOCK", "PORT_FORWARDS", "VIRTIO_PORT", "HA_PID",
    "HA_SOCK", "HA_STDOUT_LOG", "HA_STDERR_LOG", "QEMU_PID", "PROTECTED", "SOCK_DIR", "LOCK_FILE",
    "CONFIG_DIR", "DISKS_DIR", "TEMPLATES_DIR", "NETWORKS_DIR", "USER_KEY", "DEFAULT_YAML",
    "OVERRIDE_YAML",
]


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
