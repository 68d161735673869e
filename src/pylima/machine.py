"""Linux VMs as Python objects: `pylima.Instance`, `pylima.vm()` and
`pylima.list_instances()`.

An `Instance` is a handle on an instance name in `$LIMA_HOME`; each property reads
the instance directory afresh, so a handle never goes stale. The work is done by the
same functions `limactl` uses (`pylima.api`), and errors are the same `LimaError`
tree the CLI prints. (`pylima.store.instance.Instance` is the inspected record
behind a handle: `Instance.record`.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from pylima import api
from pylima.config.editflags import EditFlags
from pylima.errors import CommandError, GuestCommandError, InstanceError, LimaError
from pylima.store import dirs
from pylima.store.instance import STATUS_RUNNING, STATUS_STOPPED, inspect
from pylima.store.instance import Instance as InstanceRecord
from pylima.templates.locator import read_template

DEFAULT_TEMPLATE = "template:default"
DEFAULT_START_TIMEOUT = 600.0


def _mount_entry(m: str | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(m, str):
        writable = m.endswith(":w")
        loc = m[:-2] if writable else m
        return {"location": loc, "writable": writable}
    return dict(m)


def _network_entry(n: str | Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(n, str):
        return dict(n)
    if n == "vzNAT":
        return {"vzNAT": True}
    return {"lima": n[5:] if n.startswith("lima:") else n}


def config_expressions(*, images: Sequence[Mapping[str, Any]] | None = None,
                       mounts: Sequence[str | Mapping[str, Any]] | None = None,
                       networks: Sequence[str | Mapping[str, Any]] | None = None,
                       set: Sequence[str] = ()) -> list[str]:
    """yq expressions for the `images`, `mounts` and `networks` arguments of
    `Instance.create`, followed by the caller's own `set` expressions (applied last,
    so they win)."""
    exprs = []
    if images is not None:
        exprs.append(f".images = {json.dumps([dict(i) for i in images])}")
    if mounts is not None:
        exprs.append(f".mounts = {json.dumps([_mount_entry(m) for m in mounts])}")
    if networks is not None:
        exprs.append(f".networks = {json.dumps([_network_entry(n) for n in networks])}")
    return [*exprs, *set]



@dataclass
class SyncResult:
    """What `Instance.sync` did: the command's exit status and output, the changes it
    made to the copy (`pylima.sync.Changes`: added, deleted, modified, metadata
    counts and rsync's itemized list), and whether they were copied back."""

    host_dir: str
    guest_dir: str
    returncode: int
    stdout: str
    stderr: str
    changes: Any
    applied: bool = False


class Instance:
    """A pylima instance, by name. Create one with `Instance.create`, find one with
    `Instance.get`; `start`, `run` commands in it, copy files, forward ports, `stop`
    and `delete` it.

    Used as a context manager it starts the instance on entry. On exit an instance
    made by `Instance.create` is always stopped and deleted (also when the block
    raises or is interrupted); one found by `Instance.get` is stopped only when the
    `with` started it.
    """

    def __init__(self, name: str, *, owned: bool = False) -> None:
        self.name = name
        self._owned = owned
        self._started_here = False

    def __repr__(self) -> str:
        return f"pylima.Instance({self.name!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Instance) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)

    # ------------------------------------------------------------ finding, making

    @classmethod
    def get(cls, name: str) -> Instance:
        """The existing instance `name`; raises InstanceNotFound when there is none."""
        inspect(name)
        return cls(name)

    @classmethod
    def create(cls, name: str, template: str = DEFAULT_TEMPLATE, *,
               cpus: int | None = None, memory: float | None = None,
               disk: float | None = None, arch: str | None = None,
               vm_type: str | None = None, set: Sequence[str] = (),
               params: Mapping[str, str] | None = None,
               images: Sequence[Mapping[str, Any]] | None = None,
               mounts: Sequence[str | Mapping[str, Any]] | None = None,
               networks: Sequence[str | Mapping[str, Any]] | None = None,
               port_forwards: Sequence[str] = ()) -> Instance:
        """Create (but do not start) instance `name` from `template` (a locator:
        `template:NAME`, a file path or a URL), like `limactl create --name=NAME
        TEMPLATE`. `memory` and `disk` are GiB; `set` holds yq expressions (as
        `--set`); `params` fills the template's `param:`; `images` and `mounts`
        replace the template's lists (a mount may be a path, `PATH:w` for writable,
        or a `mounts:` entry); `networks` replaces the template's `networks:` (a
        network of networks.yaml by name, `NAME` or `lima:NAME` as `--network`, or a
        `networks:` entry; checked as `limactl create` checks them; `lima:user-v2`
        joins the instances on that user-v2 network); `port_forwards`
        are `HOST:GUEST` specs."""
        flags = EditFlags(cpus=cpus, memory=memory, disk=disk, arch=arch, vm_type=vm_type,
                          param=[f"{k}={v}" for k, v in (params or {}).items()],
                          port_forward=list(port_forwards),
                          set=config_expressions(images=images, mounts=mounts,
                                                 networks=networks, set=set))
        api.create_instance(read_template(template, name=name), flags)
        return cls(name, owned=True)

    # ------------------------------------------------------------ state

    @property
    def record(self) -> InstanceRecord:
        """The instance as `limactl list` sees it now (inspected afresh)."""
        return inspect(self.name)

    @property
    def status(self) -> str:
        """Lima's status: `Running`, `Stopped` or `Broken`."""
        return self.record.status

    @property
    def dir(self) -> Path:
        """The instance directory, `$LIMA_HOME/NAME`."""
        return dirs.instance_dir(self.name)

    @property
    def ssh_config(self) -> Path:
        """The instance's ssh.config, usable with `ssh -F PATH lima-NAME` while it runs."""
        return self.dir / dirs.SSH_CONFIG

    @property
    def config(self) -> dict[str, Any]:
        """The instance's configuration with defaults filled in."""
        rec = self.record
        if rec.config is None:
            raise InstanceError(f"instance `{self.name}` has errors: {'; '.join(rec.errors)}")
        return rec.config

    @property
    def ssh_port(self) -> int:
        """The host port of the guest's SSH server (0 when stopped)."""
        return self.record.ssh_local_port

    # ------------------------------------------------------------ lifecycle

    def start(self, timeout: float = DEFAULT_START_TIMEOUT) -> Instance:
        """Start the instance (as `limactl start NAME`) and wait until the guest is
        ready; does nothing when it runs already. Returns self."""
        api.start_instance(self.record, timeout)
        return self

    def stop(self, force: bool = False) -> None:
        """Stop the instance (as `limactl stop [-f] NAME`); nothing when stopped."""
        rec = self.record
        if rec.status == STATUS_STOPPED and not force:
            return
        api.stop_instance(rec, force=force)

    def delete(self, force: bool = False) -> None:
        """Delete the instance (as `limactl delete [-f] NAME`); without `force` it must
        be stopped."""
        api.delete_instance(self.record, force=force)

    def __enter__(self) -> Instance:
        try:
            if self.status != STATUS_RUNNING:
                self.start()
                self._started_here = True
        except BaseException:
            self._cleanup()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._cleanup()

    def _cleanup(self) -> None:
        if self._owned:
            try:
                self.stop(force=True)
            finally:
                with contextlib.suppress(LimaError):
                    self.delete(force=True)
        elif self._started_here:
            self.stop()

    # ------------------------------------------------------------ in the guest

    def _running(self) -> InstanceRecord:
        rec = self.record
        if rec.status != STATUS_RUNNING:
            raise InstanceError(f"instance `{self.name}` is not running (status "
                                f"`{rec.status}`)", hint="start it first: `inst.start()`")
        return rec

    def _ssh_argv(self, argv: Sequence[str] | str, workdir: str | None,
                  shell: str | None) -> list[str]:
        from pylima.sshutil import remote_script, ssh_argv

        rec = self._running()
        assert rec.config is not None
        command = argv if isinstance(argv, str) else " ".join(
            _quote(a) for a in argv)
        script = remote_script(rec.config, command or None, workdir, shell)
        return [*ssh_argv(rec.dir, self.name, "-q", user_session=True), "--", script]

    def run(self, argv: Sequence[str] | str, *, input: str | bytes | None = None,
            check: bool = True, timeout: float | None = None, workdir: str | None = None,
            text: bool = True, shell: str | None = None
            ) -> subprocess.CompletedProcess[Any]:
        """Run a command in the guest as `limactl shell NAME ...` does (the guest user's
        login shell, over SSH) and return its result with stdout and stderr captured.

        `argv` is an argument list, or a string of shell syntax (`"ls | wc -l"`).
        `input` is fed to its stdin (else stdin is empty). With `check`, a non-zero
        exit raises GuestCommandError (with returncode, stdout and stderr).
        `timeout` (seconds) raises `subprocess.TimeoutExpired`. With `text=False`,
        stdout and stderr are bytes."""
        full = self._ssh_argv(argv, workdir, shell)
        if text and isinstance(input, bytes):
            input = input.decode()
        elif not text and isinstance(input, str):
            input = input.encode()
        proc = subprocess.run(full, input=input,
                              stdin=subprocess.DEVNULL if input is None else None,
                              capture_output=True, text=text, timeout=timeout, check=False)
        result = subprocess.CompletedProcess(list(argv) if not isinstance(argv, str) else argv,
                                             proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            raise GuestCommandError(argv, proc.returncode, proc.stdout, proc.stderr)
        return result

    async def arun(self, argv: Sequence[str] | str, *, input: str | bytes | None = None,
                   check: bool = True, timeout: float | None = None,
                   workdir: str | None = None, text: bool = True,
                   shell: str | None = None) -> subprocess.CompletedProcess[Any]:
        """`run` as an asyncio subprocess: many guest commands can run concurrently.
        `timeout` raises `TimeoutError` (and kills the ssh client)."""
        full = self._ssh_argv(argv, workdir, shell)
        data = input.encode() if isinstance(input, str) else input
        proc = await asyncio.create_subprocess_exec(
            *full, stdin=subprocess.DEVNULL if data is None else subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(proc.communicate(data), timeout)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise
        rc = proc.returncode if proc.returncode is not None else -1
        stdout: str | bytes = out.decode() if text else out
        stderr: str | bytes = err.decode() if text else err
        shown: Any = argv if isinstance(argv, str) else list(argv)
        if check and rc != 0:
            raise GuestCommandError(argv, rc, stdout, stderr)
        return subprocess.CompletedProcess(shown, rc, stdout, stderr)

    async def astart(self, timeout: float = DEFAULT_START_TIMEOUT) -> Instance:
        """`start` in a worker thread, for asyncio code."""
        return await asyncio.to_thread(self.start, timeout)

    async def astop(self, force: bool = False) -> None:
        """`stop` in a worker thread, for asyncio code."""
        await asyncio.to_thread(self.stop, force)

    def _scp(self, sources: list[str], target: str, recursive: bool) -> None:
        from pylima import process
        from pylima.sshutil import scp_argv

        self._running()
        process.run(scp_argv(self.ssh_config, sources, target, recursive))

    def copy_to(self, src: str | os.PathLike[str], dst: str, recursive: bool = False) -> None:
        """Copy host file (or directory, with `recursive`) `src` to guest path `dst`,
        as `limactl copy SRC NAME:DST`. Raises CommandError when scp fails."""
        self._scp([os.fspath(src)], f"lima-{self.name}:{dst}", recursive)

    def copy_from(self, src: str, dst: str | os.PathLike[str], recursive: bool = False) -> None:
        """Copy guest path `src` to host path `dst`, as `limactl copy NAME:SRC DST`.
        Raises CommandError when scp fails."""
        self._scp([f"lima-{self.name}:{src}"], os.fspath(dst), recursive)

    def sync(self, host_dir: str | os.PathLike[str], argv: Sequence[str] | str, *,
             accept: bool | Callable[[SyncResult], bool] = False,
             timeout: float | None = None, shell: str | None = None) -> SyncResult:
        """`limactl shell --sync HOST_DIR NAME ARGV...` from Python, for agent-style
        work on a copy: `host_dir` is copied to the same path under the guest user's
        home, `argv` (a list, or a string of shell syntax) runs there with its output
        captured, and the changes it made are counted. They reach `host_dir` only
        when the command succeeded and `accept` says so: `True`, or a function given
        the result (with `changes`, `stdout`, ...) before anything is copied back.
        The guest's copy is removed afterwards. Refusals are Lima's (an instance with
        mounts, no rsync, a shallow path) and pylima's (a missing directory, the home
        directory): LimaError."""
        from pylima.sshutil import remote_script, ssh_argv
        from pylima.sync import Syncer, check_sync_dir, guest_dir

        rec = self._running()
        assert rec.config is not None
        host = check_sync_dir(os.fspath(host_dir), mounts=rec.config.get("mounts"),
                              workdir=None)
        dest = guest_dir(rec.config, host)
        syncer = Syncer(ssh_argv(rec.dir, self.name, "-q"), host, dest)
        try:
            syncer.copy_in()
            command = argv if isinstance(argv, str) else " ".join(_quote(a) for a in argv)
            script = remote_script(rec.config, command or None, dest, shell)
            proc = subprocess.run([*ssh_argv(rec.dir, self.name, "-q"), "--", script],
                                  stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  timeout=timeout, check=False)
            result = SyncResult(host, dest, proc.returncode, proc.stdout, proc.stderr,
                                syncer.changes())
            wanted = accept(result) if callable(accept) else accept
            if proc.returncode == 0 and wanted and not result.changes.empty:
                syncer.apply()
                result.applied = True
            return result
        finally:
            syncer.remove_guest_copy()
            syncer.close()

    def _control(self, op: str, spec: str) -> None:
        from pylima import process

        self._running()
        argv = ["ssh", "-F", str(self.ssh_config), "-O", op, "-L", spec, f"lima-{self.name}"]
        try:
            process.run(argv)
        except CommandError as e:
            raise InstanceError(f"cannot {op} port `{spec}` of instance `{self.name}`: "
                                f"{e.stderr_tail or e.message}",
                                hint="the instance's ssh master connection must be up") from e

    def forward(self, guest_port: int, host_port: int = 0) -> tuple[str, int]:
        """Forward TCP `127.0.0.1:guest_port` in the guest to a host port (a free one
        when `host_port` is 0) through the instance's SSH master connection; returns
        the host address `("127.0.0.1", port)`. Lasts until `unforward` or the stop."""
        from pylima.sshutil import free_port

        port = host_port or free_port()
        self._control("forward", _forward_spec(port, guest_port))
        return "127.0.0.1", port

    def unforward(self, guest_port: int, host_port: int) -> None:
        """Cancel a forward made by `forward`."""
        self._control("cancel", _forward_spec(host_port, guest_port))

    # ------------------------------------------------------------ snapshots, tunnel

    def snapshot(self, tag: str, action: str = "create") -> None:
        """`limactl snapshot ACTION NAME --tag TAG`: `create` (the default), `apply` or
        `delete` the snapshot `tag`. A running instance is snapshotted with its memory
        state and resumes where it was after `apply`; a stopped one has its disk
        snapshotted. Raises LimaError (e.g. a tag that exists, or does not, for
        apply/delete; a VM that QEMU cannot save, naming the device)."""
        if action not in ("create", "apply", "delete"):
            raise LimaError(f"unknown snapshot action `{action}`",
                            hint="use `create`, `apply` or `delete`")
        api.snapshot_instance(self.record, action, tag)

    def apply_snapshot(self, tag: str) -> None:
        """`snapshot(tag, "apply")`."""
        self.snapshot(tag, "apply")

    def delete_snapshot(self, tag: str) -> None:
        """`snapshot(tag, "delete")`."""
        self.snapshot(tag, "delete")

    def snapshots(self) -> list[dict[str, str]]:
        """The instance's snapshots, as `limactl snapshot list` shows them: one dict
        per snapshot with `id`, `tag`, `vmSize`, `date`, `vmClock` and `icount`."""
        from pylima.drivers import parse_snapshot_table

        table = api.snapshot_instance(self.record, "list")
        return [e.to_json() for e in parse_snapshot_table(table)]

    def tunnel(self, port: int = 0) -> int:
        """`limactl tunnel NAME [--socks-port PORT]`: a SOCKS5 proxy on 127.0.0.1:PORT
        (a free port when 0) into the guest's network (names resolve in the guest:
        `socks5h://`). It rides on the instance's SSH master connection, so it lasts
        until `close_tunnel` or the instance stops. Returns the port."""
        self._running()
        return api.open_socks_tunnel(self.record, port)

    def close_tunnel(self, port: int) -> None:
        """Close a tunnel opened by `tunnel`."""
        api.close_socks_tunnel(self.record, port)


def _forward_spec(host_port: int, guest_port: int) -> str:
    return f"127.0.0.1:{host_port}:127.0.0.1:{guest_port}"


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)


def list_instances() -> list[Instance]:
    """Every instance in `$LIMA_HOME`, by name (as `limactl list`)."""
    from pylima.store.instance import instance_names

    return [Instance(n) for n in instance_names()]


def random_instance_name(prefix: str = "pylima") -> str:
    """A fresh instance name, `PREFIX-` and 8 hex digits."""
    return f"{prefix}-{secrets.token_hex(4)}"


@contextlib.contextmanager
def vm(template: str = DEFAULT_TEMPLATE, *, name: str | None = None,
       timeout: float = DEFAULT_START_TIMEOUT, **overrides: Any) -> Iterator[Instance]:
    """A throwaway VM: create an instance from `template` (named `name`, or a random
    `pylima-XXXXXXXX`) with `Instance.create`'s keyword `overrides`, start it, yield
    it, and always stop and delete it at the end, also on errors and interrupts."""
    inst = Instance.create(name or random_instance_name(), template, **overrides)
    try:
        inst.start(timeout)
        yield inst
    finally:
        inst._cleanup()
