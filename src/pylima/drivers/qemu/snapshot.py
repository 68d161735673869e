"""Snapshots of a QEMU instance (`limactl snapshot`), as Lima's QEMU driver takes them.

A running VM: the human monitor's `savevm`, `loadvm`, `delvm` and `info snapshots`
over QMP (for a libvirt domain, through libvirt). QEMU stores the memory and device
state inside the instance's qcow2 disk, beside a disk snapshot of every writable
drive; it pauses the guest while it saves or loads and lets it run on afterwards. A
stopped VM: `qemu-img snapshot -c/-a/-d/-l` on the instance's disk (a disk-only
snapshot; for a remote libvirt host, run there over SSH, as libvirt itself runs
qemu-img for offline snapshots). The table `list` prints is QEMU's, less its
heading, as in Lima.

Unlike Lima, pylima refuses a tag that already exists (QEMU's `savevm` would replace
it and `qemu-img snapshot -c` would add a second one by the same name), a tag that
does not exist for apply and delete, and turns a refusal that QEMU prints as the
monitor command's output (a device that cannot be migrated or snapshotted) into an
error, after checking that nothing by that tag was left behind.

The functions that decide (parsing the tables, the error lines) are pure.
"""

from __future__ import annotations

import shlex
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from pylima.drivers import SnapshotError
from pylima.drivers import check_snapshot_tag as check_tag
from pylima.drivers import parse_snapshot_table as parse_list

HMPCall = Callable[[str], Awaitable[str]]

_HMP_HEADING = "List of snapshots present on all disks:\n"
_HMP_NONE = "There is no snapshot available.\n"
_IMG_HEADING = "Snapshot list:\n"


def clean_hmp_list(out: str) -> str:
    """`info snapshots` as Lima prints it: carriage returns and QEMU's heading (or its
    "no snapshot" line) removed."""
    out = out.replace("\r", "")
    out = out.replace(_HMP_HEADING, "", 1)
    return out.replace(_HMP_NONE, "", 1)


def clean_img_list(out: str) -> str:
    """`qemu-img snapshot -l` as Lima prints it: less its heading."""
    return out.replace(_IMG_HEADING, "", 1)


def monitor_error(out: str) -> str:
    """The one line of what a monitor command printed ("" when it printed nothing):
    QEMU's `Error: ` prefix dropped, lines joined."""
    text = " ".join(out.replace("\r", "").split())
    return text.removeprefix("Error: ")


def savevm_refusal(command: str, out: str) -> SnapshotError:
    """The error for a `savevm`/`loadvm`/`delvm` that printed `out`; QEMU's words name
    the device (a 9p or virtiofs mount, a raw writable drive, UEFI variables)."""
    why = monitor_error(out)
    hint = None
    low = why.lower()
    if "migration is disabled" in low or "non-migratable" in low or "blocked" in low:
        hint = ("QEMU cannot save a running VM with 9p or virtiofs mounts; stop the "
                "instance to take a disk snapshot, or use mountType reverse-sshfs")
    elif "does not support snapshots" in low:
        hint = ("QEMU saves a running VM only when every writable drive is qcow2; stop "
                "the instance to take a snapshot of its disk")
    verb = {"savevm": "create", "loadvm": "apply", "delvm": "delete"}.get(command, command)
    return SnapshotError(f"failed to {verb} the snapshot: {why}", hint=hint)


# ---- the operations (thin: one monitor or qemu-img command each) ----


def _tags(table: str) -> set[str]:
    return {e.tag for e in parse_list(table)}


async def hmp_list(hmp: HMPCall) -> str:
    return clean_hmp_list(await hmp("info snapshots"))


async def hmp_create(hmp: HMPCall, tag: str) -> None:
    check_tag(tag)
    if tag in _tags(await hmp_list(hmp)):
        raise SnapshotError(f"snapshot {tag!r} already exists",
                            hint="delete it first, or choose another tag")
    out = await hmp(f"savevm {tag}")
    if monitor_error(out):
        # QEMU checks the blockers before it writes anything; make sure.
        if tag in _tags(await hmp_list(hmp)):
            await hmp(f"delvm {tag}")
        raise savevm_refusal("savevm", out)


async def _hmp_on_existing(hmp: HMPCall, command: str, tag: str) -> None:
    """`command TAG` (loadvm, delvm) for a snapshot that must exist."""
    check_tag(tag)
    if tag not in _tags(await hmp_list(hmp)):
        raise SnapshotError(f"snapshot {tag!r} does not exist")
    out = await hmp(f"{command} {tag}")
    if monitor_error(out):
        raise savevm_refusal(command, out)


async def hmp_apply(hmp: HMPCall, tag: str) -> None:
    await _hmp_on_existing(hmp, "loadvm", tag)


async def hmp_delete(hmp: HMPCall, tag: str) -> None:
    await _hmp_on_existing(hmp, "delvm", tag)


async def qemu_img(disk: str | Path, *args: str, remote: Sequence[str] = ()) -> str:
    """`qemu-img snapshot ARGS DISK` (on another host: through `remote`, the ssh
    command line that reaches it); its stdout, or SnapshotError with qemu-img's own
    last line."""
    from pylima.process import run_owned

    argv = ["qemu-img", "snapshot", *args, str(disk)]
    if remote:
        argv = [*remote, shlex.join(argv)]
    try:
        rc, out, err = await run_owned(argv, timeout=600)
    except FileNotFoundError as e:
        raise SnapshotError(f"{argv[0]} not found", hint="install QEMU's tools") from e
    if rc != 0:
        lines = err.decode(errors="replace").strip().splitlines()
        why = lines[-1].removeprefix("qemu-img: ") if lines else f"exit status {rc}"
        raise SnapshotError(why)
    return out.decode(errors="replace")


async def img_list(disk: str | Path, remote: Sequence[str] = ()) -> str:
    return clean_img_list(await qemu_img(disk, "-l", remote=remote))


async def img_op(disk: str | Path, action: str, tag: str, remote: Sequence[str] = ()) -> None:
    """`create`, `apply` or `delete` on a stopped instance's disk."""
    check_tag(tag)
    tags = _tags(await img_list(disk, remote))
    if action == "create" and tag in tags:
        raise SnapshotError(f"snapshot {tag!r} already exists",
                            hint="delete it first, or choose another tag")
    if action != "create" and tag not in tags:
        raise SnapshotError(f"snapshot {tag!r} does not exist")
    flag = {"create": "-c", "apply": "-a", "delete": "-d"}[action]
    await qemu_img(disk, flag, tag, remote=remote)


class QemuSnapshots:
    """`drivers.Snapshotter` for a driver whose VM is QEMU (the QEMU driver, and
    libvirt's QEMU domains): the human monitor while it runs, qemu-img on its disk
    image while it is stopped. The driver gives both ways in."""

    async def _hmp_raw(self, command: str) -> str:
        """A human-monitor command's output; raises when it could not be passed."""
        raise NotImplementedError

    async def _disk_image(self) -> tuple[str | Path, list[str]]:
        """The disk image's path, and the ssh command line of the host it is on ([]
        for this host)."""
        raise NotImplementedError

    async def _change(self, action: str, tag: str, running: bool) -> None:
        """`create`, `apply` or `delete` `tag`, the running way or the stopped way."""
        if running:
            await {"create": hmp_create, "apply": hmp_apply,
                   "delete": hmp_delete}[action](self._hmp_raw, tag)
        else:
            disk, remote = await self._disk_image()
            await img_op(disk, action, tag, remote)

    async def create_snapshot(self, tag: str, *, running: bool) -> None:
        await self._change("create", tag, running)

    async def apply_snapshot(self, tag: str, *, running: bool) -> None:
        await self._change("apply", tag, running)

    async def delete_snapshot(self, tag: str, *, running: bool) -> None:
        await self._change("delete", tag, running)

    async def list_snapshots(self, *, running: bool) -> str:
        if running:
            return await hmp_list(self._hmp_raw)
        disk, remote = await self._disk_image()
        return await img_list(disk, remote)
