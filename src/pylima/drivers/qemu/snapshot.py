"""Snapshots of a QEMU instance (`limactl snapshot`), as Lima's QEMU driver takes them.

A running VM: the human monitor's `savevm`, `loadvm`, `delvm` and `info snapshots`
over QMP. QEMU stores the memory and device state inside the instance's qcow2 disk,
beside a disk snapshot of every writable drive; it pauses the guest while it saves
or loads and lets it run on afterwards. A stopped VM: `qemu-img snapshot -c/-a/-d/-l`
on the instance's disk (a disk-only snapshot). The table `list` prints is QEMU's,
less its heading, as in Lima.

Unlike Lima, pylima refuses a tag that already exists (QEMU's `savevm` would replace
it and `qemu-img snapshot -c` would add a second one by the same name), a tag that
does not exist for apply and delete, and turns a refusal that QEMU prints as the
monitor command's output (a device that cannot be migrated or snapshotted) into an
error, after checking that nothing by that tag was left behind.

The functions that decide (parsing the tables, the error lines) are pure.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
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


async def qemu_img(disk: Path, *args: str) -> str:
    """`qemu-img snapshot ARGS DISK`; its stdout, or SnapshotError with qemu-img's own
    last line."""
    from pylima.process import run_owned

    argv = ["qemu-img", "snapshot", *args, str(disk)]
    try:
        rc, out, err = await run_owned(argv, timeout=600)
    except FileNotFoundError as e:
        raise SnapshotError("qemu-img not found", hint="install QEMU's tools") from e
    if rc != 0:
        lines = err.decode(errors="replace").strip().splitlines()
        why = lines[-1].removeprefix("qemu-img: ") if lines else f"exit status {rc}"
        raise SnapshotError(why)
    return out.decode(errors="replace")


async def img_list(disk: Path) -> str:
    return clean_img_list(await qemu_img(disk, "-l"))


async def img_op(disk: Path, action: str, tag: str) -> None:
    """`create`, `apply` or `delete` on a stopped instance's disk."""
    check_tag(tag)
    tags = _tags(await img_list(disk))
    if action == "create" and tag in tags:
        raise SnapshotError(f"snapshot {tag!r} already exists",
                            hint="delete it first, or choose another tag")
    if action != "create" and tag not in tags:
        raise SnapshotError(f"snapshot {tag!r} does not exist")
    flag = {"create": "-c", "apply": "-a", "delete": "-d"}[action]
    await qemu_img(disk, flag, tag)

