"""The host agent's share of file sharing: host directories and reverse-sshfs.

- Before the VM starts, `prepare` creates missing host directories (as Lima does) and
  lets the driver serve the mounts it serves itself (QEMU's virtiofsd for virtiofs;
  `drivers.Driver.serve_mounts`). A mount that cannot be served is left out of the
  guest's configuration and reported: the start is degraded, the instance still
  comes up.
- Once the guest has booted, `mount_reverse_sshfs` runs the guest's `sshfs -o slave`
  over SSH, its SFTP stream served on the host by pylima's SFTP server confined to
  the mount's directory (see `sftpserver`), not by OpenSSH's sftp-server (which would
  serve the whole host file system to the guest).
- `describe` names the host directory in the guest's mount errors; `close` stops
  everything this module started.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
import shlex
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pylima.config.defaults import mount_tag
from pylima.process import run_owned, spawn_owned

log = logging.getLogger("pylima.hostagent")

SSHFS_MOUNT_TIMEOUT = 60.0


def _mount_desc(m: dict[str, Any], mount_type: str) -> str:
    return f"mount `{m['location']}` on `{m['mountPoint']}` ({mount_type})"


class MountManager:
    def __init__(self, name: str, inst_dir: Path) -> None:
        self.name = name
        self.dir = inst_dir
        self.mount_type = "9p"
        self.mounts: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self._sshfs: list[tuple[asyncio.subprocess.Process, asyncio.subprocess.Process]] = []
        self._guest_uid = 0

    # ---- before the VM (synchronous, from HostAgent.prepare) ----

    def prepare(self, cfg: dict[str, Any],
                serve: Callable[[list[dict[str, Any]]], list[str | None]]) -> dict[str, Any]:
        """`cfg` less the mounts that cannot be served (their errors kept in `errors`).
        `serve` is the driver's `serve_mounts`: it starts what the driver serves."""
        self.mount_type = str(cfg.get("mountType") or "9p")
        self._guest_uid = int((cfg.get("user") or {}).get("uid") or 0)
        keep = []
        for m in cfg.get("mounts") or []:
            problem = self._host_directory_problem(m, self._guest_uid)
            if problem:
                self._fail(m, problem)
            else:
                keep.append(m)
        if keep:
            served = []
            for m, problem in zip(keep, serve(keep), strict=True):
                if problem:
                    self._fail(m, problem)
                else:
                    served.append(m)
            keep = served
        if self.mount_type == "reverse-sshfs" and keep:
            from pylima.hostagent.sftpserver import openat2_supported

            if not openat2_supported():
                for m in keep:
                    self._fail(m, "pylima's confined SFTP server needs openat2(2) (Linux "
                                  "5.6 or later)")
                keep = []
        self.mounts = keep
        out = copy.deepcopy(cfg)
        out["mounts"] = copy.deepcopy(keep)
        return out

    def _fail(self, m: dict[str, Any], cause: str) -> None:
        msg = f"{_mount_desc(m, self.mount_type)} failed: {cause}"
        log.error("%s", msg)
        self.errors.append(msg)

    @staticmethod
    def _host_directory_problem(m: dict[str, Any], guest_uid: int) -> str | None:
        loc = str(m.get("location") or "")
        if os.path.isdir(loc):
            return None
        if os.path.lexists(loc):
            return "the host path is not a directory"
        # Lima creates a missing directory (writable or not) before it shares it.
        try:
            os.makedirs(loc, 0o755, exist_ok=True)
        except OSError as e:
            return f"the host directory does not exist and cannot be created: {e.strerror}"
        log.info("Created the host directory %s for a mount", loc)
        if m.get("writable") and os.geteuid() == 0 and guest_uid:
            # pylima as root: a writable directory it creates belongs to the guest user
            # (9p and virtiofs pass the guest's uid through), so that user can use it.
            with contextlib.suppress(OSError):
                os.chown(loc, guest_uid, guest_uid)
        return None

    # ---- once the guest is up ----

    def describe(self, guest_errors: list[str]) -> list[str]:
        """The guest's boot errors, with each mount tag replaced by its host directory."""
        tags = {mount_tag(str(m["location"]), str(m["mountPoint"])): str(m["location"])
                for m in self.mounts}
        out = []
        for line in guest_errors:
            for tag, loc in tags.items():
                line = line.replace(tag, f"`{loc}`")
            out.append(line)
        return out

    async def mount_reverse_sshfs(self) -> list[str]:
        """Mount every reverse-sshfs mount; returns the errors."""
        if self.mount_type != "reverse-sshfs":
            return []
        errors = []
        for m in self.mounts:
            try:
                await self._mount_one(m)
            except MountError as e:
                msg = f"{_mount_desc(m, self.mount_type)} failed: {e}"
                log.error("%s", msg)
                errors.append(msg)
        return errors

    async def _mount_one(self, m: dict[str, Any]) -> None:
        from pylima.sshutil import ssh_argv

        loc, mp = str(m["location"]), str(m["mountPoint"])
        sshfs = m.get("sshfs") or {}
        driver = sshfs.get("sftpDriver") or ""
        log.info("Mounting %s on %s (reverse-sshfs)", loc, mp)
        opts = "allow_other"
        if sshfs.get("cache") is False:
            opts += ",cache=no"
        if sshfs.get("followSymlinks"):
            opts += ",follow_symlinks"
        remote = ["sshfs", ":/", mp, "-o", "slave", "-o", opts]
        if not m.get("writable"):
            remote += ["-o", "ro"]
        if driver == "openssh-sftp-server":
            server_argv = self._openssh_sftp_server(loc)
            remote[1] = ":" + loc
        else:
            server_argv = [sys.executable, "-m", "pylima.hostagent.sftpserver", loc]
            if not m.get("writable"):
                server_argv.append("--read-only")
            if os.geteuid() == 0 and self._guest_uid:
                # pylima as root: the guest user sees root's files as its own, so that
                # a writable mount is usable without sudo (they stay root's on the host).
                gid = await self._guest_gid()
                server_argv += ["--owner", f"{self._guest_uid}:{gid}"]
        host_end, guest_end = socket.socketpair()
        try:
            server = await spawn_owned(
                *server_argv, stdin=host_end.fileno(), stdout=host_end.fileno(),
                start_new_session=True)
            ssh = await spawn_owned(
                *ssh_argv(self.dir, self.name), "--", shlex.join(remote),
                stdin=guest_end.fileno(), stdout=guest_end.fileno(),
                stderr=asyncio.subprocess.PIPE, start_new_session=True)
        finally:
            host_end.close()
            guest_end.close()
        self._sshfs.append((ssh, server))
        stderr_lines: list[str] = []
        relay = asyncio.create_task(self._relay_stderr(ssh, stderr_lines, mp))
        deadline = asyncio.get_running_loop().time() + SSHFS_MOUNT_TIMEOUT
        check = f"grep -q {shlex.quote(' ' + mp + ' fuse.sshfs ')} /proc/mounts"
        while True:
            if ssh.returncode is not None or server.returncode is not None:
                await asyncio.wait_for(relay, 5)
                why = stderr_lines[-1] if stderr_lines else \
                    f"sshfs exited with status {ssh.returncode}"
                raise MountError(why)
            rc, _, _ = await self._ssh_run(check)
            if rc == 0:
                log.info("Mounted %s on %s", loc, mp)
                return
            if asyncio.get_running_loop().time() > deadline:
                raise MountError("sshfs did not mount it in time")
            await asyncio.sleep(0.5)

    @staticmethod
    def _openssh_sftp_server(loc: str) -> list[str]:
        for c in ("/usr/lib/openssh/sftp-server", "/usr/libexec/sftp-server",
                  "/usr/libexec/openssh/sftp-server", "/usr/lib/ssh/sftp-server"):
            if os.access(c, os.X_OK):
                log.warning("sftpDriver openssh-sftp-server serves the whole host file "
                            "system to the guest, not only %s: for trusted guests only", loc)
                return [c]
        raise MountError("`sshfs.sftpDriver: openssh-sftp-server` but no sftp-server found "
                         "(Hint: install openssh-sftp-server, or leave sftpDriver empty for "
                         "pylima's own server)")

    async def _relay_stderr(self, proc: asyncio.subprocess.Process, keep: list[str],
                            mp: str) -> None:
        assert proc.stderr is not None
        while True:
            line = await proc.stderr.readline()
            if not line:
                await proc.wait()
                if proc.returncode not in (None, 0, -15):
                    log.warning("reverse-sshfs on %s ended (status %s)", mp, proc.returncode)
                return
            text = line.decode(errors="replace").rstrip()
            keep.append(text)
            log.info("[sshfs %s] %s", mp, text)

    async def _ssh_run(self, command: str) -> tuple[int, bytes, bytes]:
        from pylima.sshutil import ssh_argv

        return await run_owned([*ssh_argv(self.dir, self.name, "-o", "ConnectTimeout=10"),
                                "--", command])

    async def _guest_gid(self) -> int:
        rc, out, _ = await self._ssh_run("id -g")
        try:
            return int(out.strip()) if rc == 0 else self._guest_uid
        except ValueError:
            return self._guest_uid

    async def remount_reverse_sshfs(self) -> list[str]:
        """Mount every reverse-sshfs mount again (after a snapshot is applied, the
        guest's sshfs processes talk to connections that no longer exist): the host
        ends its halves, the guest drops its stale mounts lazily and ends its old
        sshfs processes, then each is mounted anew. Returns the errors."""
        if self.mount_type != "reverse-sshfs" or not self.mounts:
            return []
        await self.close()
        points = " ".join(shlex.quote(str(m["mountPoint"])) for m in self.mounts)
        await self._ssh_run(f"for p in {points}; do sudo -n umount -l \"$p\"; done; "
                            "sudo -n pkill -x sshfs; true")
        return await self.mount_reverse_sshfs()

    # ---- shutdown ----

    async def close(self) -> None:
        for ssh, server in self._sshfs:
            for p in (ssh, server):
                if p.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        p.terminate()
            for p in (ssh, server):
                try:
                    await asyncio.wait_for(p.wait(), 5)
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        p.kill()
                    await p.wait()
        self._sshfs.clear()


class MountError(Exception):
    pass
