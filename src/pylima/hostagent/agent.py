"""The host agent daemon (`limactl hostagent NAME`), one asyncio task per concern:
the VM (through its driver, `drivers.Driver`), SSH readiness, the boot-done marker
and probes, the guest agent and port forwarding, the ha.sock API; torn down in
reverse order on SIGTERM/SIGINT or the VM's exit.

The host agent never reaches into a driver's internals: it asks the registry for
the instance's driver and uses the interface and the capabilities the driver
declares (`GuestAgentTransport`, `HostPortForwarding`, `Snapshotter`).

ha.sock speaks a little HTTP: `GET /v1/info` (Lima's), and pylima's
`POST /v1/snapshot` with a JSON body {"action": "create"|"apply"|"delete"|"list",
"tag": T}, and `POST /v1/tunnel` with {"port": N, "close": false} (`limactl tunnel`'s
SOCKS proxy, on the SSH master, kept across a renewed master). Snapshots of the
running VM go through the host agent, which owns it, and which after `apply` sets
the guest's clock again and renews what rode on the guest's old state (the SSH
master with its forwards and tunnels, the automatic port forwards, reverse-sshfs
mounts)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shlex
import signal
import socket
import sys
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pylima.drivers import (
    Driver,
    GuestAgentTransport,
    GuestLinkWatch,
    HostPortForwarding,
    Snapshotter,
)
from pylima.errors import LimaError, LockError
from pylima.hostagent import events
from pylima.hostagent.mounts import MountManager
from pylima.hostagent.portfwd import GuestAgentLink, GuestPort, PortForwarder
from pylima.process import kill_and_reap, run_owned, spawn_owned
from pylima.store import dirs
from pylima.store.instance import write_atomic

log = logging.getLogger("pylima.hostagent")

# Guest files, under GUEST_RUN_DIR (/run): the boot scripts' markers. lima-ssh-ready
# is written once /etc/environment is final: the boot scripts end the user's sessions
# when they change it, which would take a master connection down with them.
GUEST_RUN_DIR = "/run"
BOOT_DONE = "lima-boot-done"
BOOT_ERRORS = "lima-boot-errors"
SSH_READY = "lima-ssh-ready"
POWERDOWN_TIMEOUT = 90.0
PROBE_TIMEOUT = 600.0  # Lima: 200 tries, 3 s apart; PYLIMA_PROBE_TIMEOUT overrides
# How long after the boot scripts finish the guest agent may take to answer on its
# virtio-serial port before the host agent runs it over SSH instead.
GUEST_AGENT_GRACE = 20.0
# SSH reaches the guest over the NIC whose link the driver watches: nothing can answer
# before it is up, so this is only a bound on a driver that misreads a guest.
LINK_WAIT_S = 120.0
# Until READY, one line this often on what the boot waits for: a boot that never ends
# says where it stands in ha.stderr.log (Lima logs its own "Waiting for" lines).
SLOW_BOOT_REPORT_S = 60.0
# Fault injection for tests: the host agent stops its boot sequence at this phase
# (booting, ssh, boot-scripts, ready), announces it with a `paused:PHASE` event and
# waits there; the test then kills what it wants with a real signal.
PAUSE_ENV = "PYLIMA_HOSTAGENT_PAUSE_AT"
PAUSE_PHASES = ("booting", "ssh", "boot-scripts", "ready")
TIME_SYNC_DELAY = 5.0
TIME_SYNC_INTERVAL = 10.0  # as Lima
HOSTS_POLL = 1.0  # seconds between looks at the user-v2 networks' hosts files
SSH_MASTER_WAIT = 300.0  # a forward over SSH waits this long for the master (slow boots)


DriverFactory = Callable[[str, Path, dict[str, Any]], Driver]


def probe_timeout() -> float:
    try:
        return float(os.environ.get("PYLIMA_PROBE_TIMEOUT") or PROBE_TIMEOUT)
    except ValueError:
        return PROBE_TIMEOUT


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _peek_banner(sock: socket.socket) -> bool:
    """Until `sock` has data: True for the start of an SSH banner, left unread;
    False when the peer closed or sent something else."""
    loop, fd = asyncio.get_running_loop(), sock.fileno()
    while True:
        ready: asyncio.Future[None] = loop.create_future()
        loop.add_reader(fd, _resolve, ready)
        try:
            await ready
        finally:
            loop.remove_reader(fd)
        head = sock.recv(4, socket.MSG_PEEK)
        if not head or not b"SSH-".startswith(head):
            return False
        if len(head) == 4:
            return True
        await asyncio.sleep(0.05)  # a banner split by the network: the rest is coming


class HostAgent:
    def __init__(self, name: str, pidfile: Path, socket_path: Path, *,
                 driver_factory: DriverFactory | None = None,
                 guest_run_dir: str = GUEST_RUN_DIR, show_progress: bool = False) -> None:
        self.name = name
        # `limactl start --progress`: the guest's boot log as cloudInitProgress events
        self.show_progress = show_progress
        self.dir = dirs.instance_dir(name)
        self.pidfile = pidfile
        self.socket_path = socket_path
        self.driver_factory = driver_factory
        self.guest_run_dir = guest_run_dir
        self.powerdown_timeout = POWERDOWN_TIMEOUT
        self.instance_id = ""
        self.ssh_port = 0
        self.driver: Driver | None = None
        self.stop_requested = asyncio.Event()
        self.errors: list[str] = []
        self.cfg: dict[str, Any] = {}
        self.status: dict[str, Any] = {}
        self.boot_done = asyncio.Event()
        self.progress_task: asyncio.Task[None] | None = None
        self.after_ssh_ready: asyncio.Task[list[str]] | None = None
        self.waiting_for = "the guest's SSH server"
        self.forwarder: PortForwarder | None = None
        self.ssh_forwards: list[dict[str, Any]] = []
        self.guest_agent_alive = asyncio.Event()
        self.mounts = MountManager(name, self.dir)
        self.ssh_master: asyncio.subprocess.Process | None = None
        self.mount_tags: list[str] = []
        self.guest_link: GuestAgentLink | None = None
        self.snapshot_lock = asyncio.Lock()
        self.socks_tunnels: set[int] = set()  # `limactl tunnel` ports, on the master
        self.user_networks: list[str] = []  # the user-v2 networks this instance is on
        self.member_locks: list[int] = []

    def guest_path(self, marker: str) -> str:
        return f"{self.guest_run_dir}/{marker}"

    # ---- preparation (synchronous, before the event loop does real work) ----

    def prepare(self) -> None:
        """Make the driver, let it serve the mounts it serves, write ssh.config and
        cidata.iso."""
        from pylima.cidata.iso import write_cidata_iso
        from pylima.cidata.render import mount_tag, render_cidata
        from pylima.guestagent import guest_agent_bytes, guest_init_bytes
        from pylima.images.disk import boot_disk_path
        from pylima.sshutil import (
            X11_WITHOUT_DISPLAY,
            dot_ssh_pubkeys,
            ensure_host_key,
            free_port,
            write_ssh_files,
            x11_without_display,
        )
        from pylima.store.instance import inspect

        inst = inspect(self.name)
        if inst.config is None:
            raise LimaError(f"instance `{self.name}` has errors: {inst.errors}")
        from pylima.drivers import registry

        if registry.uses_local_disk(inst.config) and boot_disk_path(self.dir) is None:
            raise LimaError(f"instance `{self.name}` has no disk",
                            hint=f"run `limactl start {self.name}` to prepare it")
        if self.driver_factory is None:
            for w in registry.validate(inst.config):
                log.warning("%s", w)
            self.driver = registry.new_driver(self.name, self.dir, inst.config)
        else:
            self.driver = self.driver_factory(self.name, self.dir, inst.config)
        # less the mounts that cannot be served
        cfg = self.cfg = self.mounts.prepare(inst.config, self.driver.serve_mounts)
        self.instance_id = f"iid-{uuid.uuid4().hex}"
        self.ssh_port = int((cfg.get("ssh") or {}).get("localPort") or 0) or free_port()
        host_priv, host_pub = ensure_host_key(self.dir)
        ssh_cfg = cfg.get("ssh") or {}
        write_ssh_files(self.name, self.dir, cfg["user"]["name"], self.ssh_port, host_pub,
                        ssh_cfg)
        if x11_without_display(ssh_cfg):
            log.warning("%s", X11_WITHOUT_DISPLAY)
        pubkeys = [(dirs.config_dir() / (dirs.USER_KEY + ".pub")).read_text().strip()]
        if ssh_cfg.get("loadDotSSHPubKeys"):
            keys, bad = dot_ssh_pubkeys()
            pubkeys += keys
            for w in bad:
                log.warning("%s", w)
        self.mount_tags = [mount_tag(m["location"], m["mountPoint"])
                           for m in cfg.get("mounts") or []]
        tags = dict(enumerate(self.mount_tags))
        ca_files = []
        for f in (cfg.get("caCerts") or {}).get("files") or []:
            try:
                ca_files.append(Path(os.path.expanduser(f)).read_text())
            except OSError as e:
                raise LimaError(f"cannot read `caCerts.files` entry `{f}`: {e.strerror}") from e
        from pylima.containers.archive import cached_archive

        archive = cached_archive(cfg)
        user_nics = self._join_user_networks(cfg)
        files = render_cidata(cfg, instance_name=self.name, instance_id=self.instance_id,
                              user_pubkeys=pubkeys, host_key_private=host_priv,
                              host_key_public=host_pub, ssh_local_port=self.ssh_port,
                              mount_tags=tags, host_env=dict(os.environ),
                              ca_cert_files=ca_files, host_home=str(Path.home()),
                              guest_agent=guest_agent_bytes(), guest_init=guest_init_bytes(),
                              containerd_archive=archive.read_bytes() if archive else None,
                              user_nics=user_nics)
        write_cidata_iso(files, self.dir / dirs.CIDATA_ISO)

    def _join_user_networks(self, cfg: dict[str, Any]) -> list[Any]:
        """Lease this instance's addresses on its user-v2 networks and join them (the
        first member starts the network's daemon); the member locks stay open for the
        host agent's life, which is how the daemon knows a member runs."""
        from pylima.store import usernet

        if not usernet.user_v2_entries(cfg):
            return []
        from pylima.store.networks import load_networks

        entries = load_networks()["networks"]
        nics = usernet.instance_nics(cfg, self.name, entries)
        for nic in nics:
            self.user_networks.append(nic.network)
            self.member_locks.append(usernet.join(usernet.user_net(
                nic.network, entries[nic.network]), self.name))
            log.info("Network `%s`: %s/%d on %s (%s)", nic.network, nic.address,
                     nic.prefixlen, nic.interface, nic.mac)
        return nics

    # ---- the running agent ----

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop_requested.set)
        write_atomic(self.pidfile, f"{os.getpid()}\n")
        pause = os.environ.get(PAUSE_ENV)
        if pause and pause not in PAUSE_PHASES:
            log.warning("%s=%s names no phase (%s); not pausing", PAUSE_ENV, pause,
                        ", ".join(PAUSE_PHASES))
        server = None
        try:
            try:
                # In the loop's thread, not an executor's: the death signal of the
                # children prepare() starts (virtiofsd) follows the spawning thread.
                self.prepare()
                assert self.driver is not None
                server = await asyncio.start_unix_server(self._serve_api,
                                                         path=str(self.socket_path))
                log.info("Starting the VM (hint: to watch the boot progress, see %s)",
                         self.dir / dirs.SERIAL_LOG)
                await self.driver.start(self.cfg, ssh_local_port=self.ssh_port,
                                        mount_tags=self.mount_tags)
            except LimaError as e:
                msg = e.message + (f" (Hint: {e.hint})" if e.hint else "")
                log.error("%s", msg)
                events.emit(exiting=True, errors=[msg])
                return 1
            driver = self.driver
            self._emit(sshLocalPort=self.ssh_port, phase="booting")
            boot = asyncio.create_task(self._boot_sequence())
            # Plain mode, as Lima: the boot scripts that install the guest agent do
            # not run, so there are no automatic port forwards and no time sync.
            guest_agent = asyncio.create_task(
                asyncio.sleep(0) if self.cfg.get("plain") else self._guest_agent())
            vm_exit = asyncio.create_task(driver.wait())
            stop = asyncio.create_task(self.stop_requested.wait())
            done, _ = await asyncio.wait({vm_exit, stop}, return_when=asyncio.FIRST_COMPLETED)
            for task in (guest_agent, boot):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if stop in done and not vm_exit.done():
                log.info("Shutting down the VM")
                await driver.stop(self.powerdown_timeout)
                await vm_exit
                errors: list[str] = []
            else:
                rc = vm_exit.result()
                errors = [f"the VM ({driver.name}) exited unexpectedly with status {rc} "
                          f"(see {self.dir / dirs.HA_STDERR_LOG} and "
                          f"{self.dir / dirs.SERIAL_LOG})"]
                log.error("%s", errors[0])
            stop.cancel()
            events.emit(exiting=True, errors=errors)
            return 0 if not errors else 1
        finally:
            if server is not None:
                server.close()
            from pylima.hostagent.provision import delete_copies

            delete_copies(self.cfg)
            await self.mounts.close()
            await self._close_ssh_master()
            if self.driver is not None:
                await self.driver.close()
            for fd in self.member_locks:  # the VM is gone: no longer a member
                with contextlib.suppress(OSError):
                    os.close(fd)
            for p in (self.socket_path, self.pidfile, self.dir / dirs.PORT_FORWARDS,
                      *(Path(r["hostAddr"]) for r in self.ssh_forwards
                        if r["protocol"] == "unix" and not r.get("reverse")),
                      *(Path(p) for p in (self.forwarder.host_sockets()
                                          if self.forwarder else []))):
                with contextlib.suppress(OSError):
                    p.unlink()

    async def _ssh(self, *remote: str, input: bytes | None = None,
                   timeout: float = 30.0) -> tuple[int, bytes, bytes]:
        from pylima.sshutil import ssh_argv

        argv = [*ssh_argv(self.dir, self.name, "-o", "ConnectTimeout=10"), "--", *remote]
        return await run_owned(argv, input=input, timeout=timeout)

    async def _checkpoint(self, phase: str) -> None:
        """Where the fault-injection hook may hold the boot sequence (see PAUSE_ENV)."""
        if os.environ.get(PAUSE_ENV) != phase:
            return
        log.warning("Paused at phase `%s` (%s is set)", phase, PAUSE_ENV)
        events.emit(**{**self.status, "phase": f"paused:{phase}"})
        await asyncio.Event().wait()

    async def _boot_sequence(self) -> None:
        await self._checkpoint("booting")
        log.info("Waiting for SSH on 127.0.0.1:%d", self.ssh_port)
        # Two SSH connections take the guest from booting to READY (each costs the
        # guest a second or two of CPU under emulation): the master, opened as soon
        # as sshd greets, and one command over it that reports the boot scripts'
        # lima-ssh-ready, then lima-boot-done and the boot errors (_watch_boot).
        # boot/07 ends the user's sessions when it changes /etc/environment, the
        # master's among them: a master still up once the marker is there has the
        # final environment; one that is gone is opened again.
        reporter = asyncio.create_task(self._report_slow_boot())
        try:
            linked = await self._wait_for_guest_link()
            while True:
                await self._ensure_ssh_master(quiet=True,
                                              connected=await self._wait_for_sshd(linked))
                out = await self._watch_boot()
                if out is not None:
                    break
                await asyncio.sleep(0.5)  # SSH failed (see _watch_boot); again
            await self._boot_done(out)
            reporter.cancel()
            await self._keep_ssh_master()
        finally:
            for task in (self.progress_task, self.after_ssh_ready, reporter):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task

    async def _watch_boot(self) -> bytes | None:
        """One command in the guest, over the master: it says `connected`, then
        `ssh-ready` once this boot's lima-ssh-ready is there, then `boot-done` and
        the boot errors once lima-boot-done is. The host acts on each line as it
        comes: what needs the final SSH environment (the SSH forwards, yq
        provisioning, which boot.sh waits for) starts at `ssh-ready`. The boot
        errors, once the boot is done; None when SSH failed before `ssh-ready`
        (sshd up before the user's keys, a rebooting guest, the session ended by
        boot/07): the caller tries again."""
        from pylima.sshutil import HOST_AGENT_KEX, ssh_argv

        iid = self.instance_id

        def wait(path: str, code: int) -> str:
            return (f"i=0; until v=; read -r v 2>/dev/null <{shlex.quote(path)}; "
                    f'[ "$v" = {iid} ]; do i=$((i + 1)); [ $i -lt 250 ] || exit {code}; '
                    "sleep 0.2; done")

        while True:
            script = "echo connected; "
            if self.after_ssh_ready is None:
                script += f"{wait(self.guest_path(SSH_READY), 3)}; "
            script += (f"echo ssh-ready; {wait(self.guest_path(BOOT_DONE), 4)}; "
                       f"echo boot-done; cat {self.guest_path(BOOT_ERRORS)} 2>/dev/null; exit 0")
            argv = [*ssh_argv(self.dir, self.name, "-o", "ConnectTimeout=10",
                              *HOST_AGENT_KEX), "--", script]
            proc = await spawn_owned(*argv, stdin=asyncio.subprocess.DEVNULL,
                                     stdout=asyncio.subprocess.PIPE,
                                     stderr=asyncio.subprocess.PIPE)
            assert proc.stdout is not None
            try:
                while (line := (await asyncio.wait_for(proc.stdout.readline(), 90)).strip()) \
                        not in (b"boot-done", b""):
                    if line == b"connected":
                        self.waiting_for = "the guest's boot scripts (lima-boot-done)"
                        self._on_ssh_ready()
                        await self._checkpoint("ssh")
                    elif line == b"ssh-ready" and self.after_ssh_ready is None:
                        await self._ensure_ssh_master()
                        await self._checkpoint("boot-scripts")
                        self.after_ssh_ready = asyncio.create_task(self._after_ssh_ready())
                out, err = await asyncio.wait_for(proc.communicate(), 90)
            except BaseException as e:
                await asyncio.shield(kill_and_reap(proc))
                if isinstance(e, TimeoutError):
                    continue
                raise
            if proc.returncode == 0:
                return out
            if proc.returncode in (3, 4):  # still waiting; the guest is up
                continue
            log.debug("ssh to the guest failed (%s): %s", proc.returncode,
                      err.decode(errors="replace").strip())
            if self.after_ssh_ready is None:
                return None
            await asyncio.sleep(1)  # after lima-ssh-ready: a rebooting guest
            await self._ensure_ssh_master()

    async def _after_ssh_ready(self) -> list[str]:
        """What needs SSH with the final environment: the SSH forwards, and yq
        provisioning (boot.sh waits for it before the system scripts)."""
        await self._start_ssh_forwards()
        from pylima.hostagent import provision

        if provision.yq_entries(self.cfg):
            return await provision.apply_yq(self._ssh, self.cfg, self.instance_id)
        return []

    def _on_ssh_ready(self) -> None:
        if self.status.get("phase") == "boot scripts":
            return  # a later connection of the same wait
        log.info("SSH is ready")
        self._emit(sshLocalPort=self.ssh_port, phase="boot scripts")
        if self.show_progress:
            self.progress_task = asyncio.create_task(self._watch_progress())

    async def _wait_for_guest_link(self) -> bool:
        """Until the guest's network interface is up, where the driver can tell
        (True then). Every SSH probe sent before the guest can answer stays queued in
        QEMU's user-mode network after the probe gives up, and reaches sshd once it
        listens: a sshd child for nothing each (a dozen per boot under emulation,
        each a fifth of a second of the guest's CPU while it boots, and a
        `kex_exchange_identification` error in its journal)."""
        if isinstance(self.driver, GuestLinkWatch):
            if await self.driver.wait_guest_link(LINK_WAIT_S):
                log.debug("the guest's network interface is up")
                return True
        return False

    async def _wait_for_sshd(self, linked: bool) -> socket.socket:
        """A connection on which sshd has greeted (its banner is still unread: the
        SSH master takes the connection over, see `ConnectedHandover`).

        QEMU's user-mode network accepts a connection on the host port before the
        guest can: until the guest's network is up, its SYN to the guest goes
        unanswered and is retried with TCP's backoff (1 s, 2 s, 4 s ...), so an ssh
        started then hears of sshd seconds late."""
        if linked:
            return await self._wait_for_sshd_linked()
        # The link's state is unknown: a probe gives up on a silent connection after
        # a short wait and opens a new one, which hears of sshd at once.
        wait, silent = 1.5, 0
        while True:
            sock = await self._connect_ssh_port()
            if sock is None:
                await asyncio.sleep(0.3)
                continue
            try:
                if await asyncio.wait_for(_peek_banner(sock), wait):
                    log.debug("sshd greets on port %d", self.ssh_port)
                    return sock
                # closed: the guest refused (its sshd is not listening yet)
            except OSError:
                pass
            except TimeoutError:
                # Silent: the guest's network is not up yet (the usual case for the
                # first 10-20 s), or sshd is slow to greet under load: after half a
                # minute of silence, wait longer each time so a slow sshd is heard.
                silent += 1
                if silent > 20:
                    wait = min(wait + 0.5, 10.0)
            sock.close()
            await asyncio.sleep(0.3)

    async def _wait_for_sshd_linked(self) -> socket.socket:
        """Once the guest's link is up it answers a connection at once, refusing it
        until sshd listens. A silent one is a SYN that came in the moment before the
        guest took its address (QEMU retries it seconds later), or a sshd slow to
        greet under load. Either way it reaches sshd in the end: given up, it would
        cost sshd a child for nothing. So it stays open, and after a few seconds
        another connection is tried alongside; the first to greet is the one."""
        await asyncio.sleep(0.5)  # the guest's DHCP, a fraction of a second after its link
        pending: dict[asyncio.Task[bool], socket.socket] = {}
        try:
            while True:
                if len(pending) < 3 and (sock := await self._connect_ssh_port()):
                    pending[asyncio.create_task(_peek_banner(sock))] = sock
                if not pending:
                    await asyncio.sleep(0.3)
                    continue
                done, _ = await asyncio.wait(pending, timeout=4.0,
                                             return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    sock = pending.pop(task)
                    if not task.exception() and task.result():
                        log.debug("sshd greets on port %d", self.ssh_port)
                        return sock
                    sock.close()  # refused: sshd is not listening yet
                if done:
                    await asyncio.sleep(0.3)
        finally:
            for task in pending:
                task.cancel()
            # each task lets go of its socket before the socket closes
            await asyncio.gather(*pending, return_exceptions=True)
            for sock in pending.values():
                sock.close()

    async def _connect_ssh_port(self) -> socket.socket | None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(asyncio.get_running_loop().sock_connect(
                sock, ("127.0.0.1", self.ssh_port)), 5)
            return sock
        except (OSError, TimeoutError):
            sock.close()
            return None

    async def _boot_done(self, out: bytes) -> None:
        """The boot scripts are done; `out` is their error list. Then the mounts the
        host serves over SSH, the probes and copyToHost, and READY."""
        from pylima.hostagent import provision

        errors: list[str] = list(self.mounts.errors)
        if self.after_ssh_ready is not None:
            self.waiting_for = "yq provisioning"
            errors += await self.after_ssh_ready
        self.boot_done.set()
        if self.progress_task is not None:
            # as Lima: the log's end is reported before READY
            with contextlib.suppress(Exception):
                await self.progress_task
        log.info("The guest's boot scripts have finished")
        errors += self.mounts.describe(
            [ln for ln in out.decode(errors="replace").splitlines() if ln.strip()])
        self.waiting_for = "the reverse-sshfs mounts"
        errors += await self.mounts.mount_reverse_sshfs()
        errors += await self._run_probes()
        self.waiting_for = "copyToHost"
        errors += await provision.copy_to_host(self._ssh, self.cfg)
        self.errors = errors
        if errors:
            for e in errors:
                log.error("%s", e)
        self._emit(running=True, degraded=bool(errors), errors=errors,
                   sshLocalPort=self.ssh_port)
        await self._checkpoint("ready")

    # The guest's boot log: pylima-init's and boot.sh's lines in the journal on
    # pylima's images, cloud-init's output log on images that boot with cloud-init.
    PROGRESS_SCRIPT = (
        "if [ -d /run/pylima-init ]; then "
        "exec sudo -n journalctl -b -f -o cat -t init-launch -t lima-boot; "
        "else exec sudo -n tail -n +1 -F /var/log/cloud-init-output.log; fi")

    async def _watch_progress(self) -> None:
        """Follow the guest's boot log until the boot scripts are done (Lima's
        `--progress`, with Lima's event: `cloudInitProgress`)."""
        from pylima.process import kill_and_reap, spawn_owned
        from pylima.sshutil import ssh_argv

        status = dict(self.status)
        events.emit(**status, cloudInitProgress={"active": True})
        argv = [*ssh_argv(self.dir, self.name, "-o", "ConnectTimeout=10"), "--",
                self.PROGRESS_SCRIPT]
        proc = await spawn_owned(*argv, stdin=asyncio.subprocess.DEVNULL,
                                 stdout=asyncio.subprocess.PIPE,
                                 stderr=asyncio.subprocess.DEVNULL)

        async def relay() -> None:
            assert proc.stdout is not None
            async for raw in proc.stdout:
                line = raw.decode(errors="replace").rstrip("\n")
                if line:
                    events.emit(**status, cloudInitProgress={"active": True, "logLine": line})

        reader = asyncio.create_task(relay())
        try:
            await self.boot_done.wait()
            await asyncio.sleep(0.5)  # the last lines are on their way
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            await kill_and_reap(proc)
        events.emit(**status, cloudInitProgress={
            "completed": True, "logLine": "Cloud-init monitoring completed successfully"})

    async def _run_probes(self) -> list[str]:
        errors = []
        probes = self.cfg.get("probes") or []
        for n, probe in enumerate(probes, 1):
            desc = probe.get("description") or "probe"
            log.info("Waiting for the readiness probe: %s", desc)
            self.waiting_for = f"the readiness probe `{desc}`"
            deadline = asyncio.get_running_loop().time() + probe_timeout()
            script = str(probe.get("script") or "").encode()
            runner = ('f=$(mktemp) && cat >"$f" && chmod +x "$f" && "$f"; rc=$?; '
                      'rm -f "$f"; exit $rc')
            while True:
                rc, _, err = await self._ssh(runner, input=script, timeout=120)
                if rc == 0:
                    break
                if asyncio.get_running_loop().time() > deadline:
                    hint = probe.get("hint") or ""
                    why = err.decode(errors="replace").strip().splitlines()[-1:] or [
                        f"exit status {rc}"]
                    errors.append(f"failed to satisfy the readiness probe {n} of "
                                  f"{len(probes)} `{desc}`: {why[0]}"
                                  + (f" (Hint: {hint})" if hint else ""))
                    break
                await asyncio.sleep(3)
        return errors

    async def _report_slow_boot(self) -> None:
        """Every SLOW_BOOT_REPORT_S until READY: what the boot is waiting for."""
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        while True:
            await asyncio.sleep(SLOW_BOOT_REPORT_S)
            log.info("Still waiting for %s (%d s after the VM started)", self.waiting_for,
                     loop.time() - t0)

    def _emit(self, **status: Any) -> None:
        """A status event; port-forward events repeat the last status, as Lima's do."""
        self.status = {k: v for k, v in status.items() if k != "portForward"}
        events.emit(**status)

    # ---- the guest agent and port forwarding ----

    def _on_port_event(self, ev: dict[str, Any]) -> None:
        events.emit(**self.status, portForward=ev)

    def _active_forwards(self) -> list[dict[str, Any]]:
        """Every active forward: the guest agent's ones and those over SSH."""
        return (self.forwarder.forwards() if self.forwarder else []) + self.ssh_forwards

    def _write_forwards(self) -> None:
        from pylima.hostagent.portfwd import write_state

        with contextlib.suppress(OSError):
            write_state(self.dir / dirs.PORT_FORWARDS, self._active_forwards())

    async def _on_guest_message(self, msg: dict[str, Any]) -> None:
        if msg.get("op") == "snapshot":
            if not self.guest_agent_alive.is_set():
                log.info("The guest agent is running (version %s)", msg.get("version"))
                self.guest_agent_alive.set()
            if self.forwarder is not None:
                await self.forwarder.snapshot(
                    [GuestPort.from_json(p) for p in msg.get("ports") or []],
                    str(msg.get("session") or ""))
        elif msg.get("op") == "ports" and self.forwarder is not None:
            await self.forwarder.update(
                [GuestPort.from_json(p) for p in msg.get("added") or []],
                [GuestPort.from_json(p) for p in msg.get("removed") or []])

    async def _guest_agent(self) -> None:
        """Talk to the guest agent: over its virtio-serial port (ga.sock), or over SSH
        when it does not answer there."""
        forced_ssh = os.environ.get("PYLIMA_GUEST_AGENT_TRANSPORT") == "ssh"
        link = None if forced_ssh else await self._virtio_link()
        tasks = []
        if link is not None:
            tasks = [asyncio.create_task(link.run()),
                     asyncio.create_task(link.hello_until_answered())]
            await self.boot_done.wait()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(link.snapshot_seen.wait(), GUEST_AGENT_GRACE)
        else:
            await self.boot_done.wait()
        proc = None
        if link is None or not link.snapshot_seen.is_set():
            for t in tasks:
                t.cancel()
            if forced_ssh:
                log.info("Running the guest agent over SSH (PYLIMA_GUEST_AGENT_TRANSPORT=ssh)")
            elif self.driver is not None and not self.driver.info.virtio_port:
                log.info("The %s driver carries no guest agent port; running the guest "
                         "agent over SSH", self.driver.name)
            else:
                log.warning("The guest agent does not answer on the driver's port %s; "
                            "running it over SSH instead",
                            self.driver.info.virtio_port if self.driver else "")
            link, proc = await self._ssh_link()
            tasks = [asyncio.create_task(link.run()),
                     asyncio.create_task(link.hello_until_answered())]
        self.guest_link = link
        sync = asyncio.create_task(self._time_sync(link))
        helpers = [sync]
        if self.cfg.get("mountInotify"):
            helpers.append(asyncio.create_task(self._inotify(link)))
        helpers.append(asyncio.create_task(self._push_network_hosts(link)))
        try:
            await tasks[0]
            log.warning("The guest agent's connection has closed")
        finally:
            for t in (*tasks, *helpers):
                t.cancel()
            if proc is not None and proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()

    def _make_forwarder(self, link: GuestAgentLink) -> None:
        if self.cfg.get("plain"):
            return  # plain mode: static forwards only
        driver = self.driver
        forwarding = driver if isinstance(driver, HostPortForwarding) \
            and driver.info.features.host_port_forwarding else None
        if forwarding is None:
            log.info("The %s driver cannot forward host ports; guest ports are forwarded "
                     "over the SSH master", driver.name if driver else "VM")
        self.forwarder = PortForwarder(
            self.cfg.get("portForwards") or [], self.ssh_port, forwarding,
            driver.info.features.guest_address if driver else "", link.request,
            self._on_port_event,
            self._write_forwards, ssh_control=self._ssh_control)

    async def _ssh_control(self, verb: str, args: Sequence[str]) -> str:
        """`ssh -O VERB ARGS` on the master connection (waiting, bounded, for the
        master that the boot sequence opens); "" on success, else ssh's error."""
        from pylima.sshutil import ssh_argv

        loop = asyncio.get_running_loop()
        deadline = loop.time() + SSH_MASTER_WAIT
        while not (self.dir / dirs.SSH_SOCK).exists():
            if loop.time() > deadline:
                return "no SSH master connection to forward over"
            await asyncio.sleep(0.2)
        proc = await spawn_owned(*ssh_argv(self.dir, self.name, "-O", verb, *args),
                                 stdin=asyncio.subprocess.DEVNULL,
                                 stdout=asyncio.subprocess.DEVNULL,
                                 stderr=asyncio.subprocess.PIPE)
        _, err = await proc.communicate()
        if proc.returncode:
            return " ".join(err.decode(errors="replace").split()) or \
                f"ssh -O {verb} exited with status {proc.returncode}"
        return ""

    async def _virtio_link(self) -> GuestAgentLink | None:
        """The guest agent's stream through the driver, when the driver carries one."""
        if not isinstance(self.driver, GuestAgentTransport):
            return None
        conn = await self.driver.guest_agent_connect()
        if conn is None:
            return None
        link = GuestAgentLink(conn[0], conn[1], self._on_guest_message)
        self._make_forwarder(link)
        return link

    async def _ssh_link(self) -> tuple[GuestAgentLink, asyncio.subprocess.Process]:
        from pylima.sshutil import ssh_argv

        prefix = self.cfg.get("guestInstallPrefix") or "/usr/local"
        proc = await spawn_owned(
            *ssh_argv(self.dir, self.name), "--", "sudo", "-n",
            f"{prefix}/bin/lima-guestagent", "stdio",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL)
        assert proc.stdout is not None and proc.stdin is not None
        link = GuestAgentLink(proc.stdout, proc.stdin, self._on_guest_message)
        self._make_forwarder(link)
        return link, proc

    async def _time_sync(self, link: GuestAgentLink) -> None:
        """Keep the guest's clock on the host's (it stops while the host sleeps)."""
        import time

        await link.snapshot_seen.wait()
        await asyncio.sleep(TIME_SYNC_DELAY)
        while True:
            try:
                r = await link.request("sync-time", time=time.time(), timeout=10)
                if r.get("error"):
                    log.warning("Time sync: the guest could not set its clock: %s "
                                "(drift was %s ms)", r["error"], r.get("driftMs"))
                elif r.get("adjusted"):
                    log.info("Time sync: guest clock adjusted (was %s ms off)",
                             r.get("driftMs"))
            except (TimeoutError, OSError, ConnectionError) as e:
                log.debug("Time sync failed: %s", e)
            await asyncio.sleep(TIME_SYNC_INTERVAL)

    async def _push_network_hosts(self, link: GuestAgentLink) -> None:
        """The members of this instance's user-v2 networks (`lima-NAME.internal`), to
        the guest's /etc/hosts: now, and whenever a network's hosts file changes. On
        no network, the block a boot on one left there is removed, once."""
        from pylima.store.usernet import hosts_file

        await link.snapshot_seen.wait()
        sent: str | None = None
        while True:
            text = ""
            for name in self.user_networks:
                with contextlib.suppress(OSError):
                    text += hosts_file(name).read_text()
            if text != sent:
                try:
                    r = await link.request("hosts", hosts=text, timeout=10)
                    if r.get("error"):
                        log.warning("The guest could not update /etc/hosts: %s", r["error"])
                    sent = text
                except (TimeoutError, OSError, ConnectionError) as e:
                    log.debug("Pushing the network's hosts failed: %s", e)
            if not self.user_networks and sent is not None:
                return
            await asyncio.sleep(HOSTS_POLL)

    async def _inotify(self, link: GuestAgentLink) -> None:
        """mountInotify: host-side changes under the writable mounts, to the guest."""
        from pylima.hostagent.inotify import forward_host_changes

        await link.snapshot_seen.wait()
        try:
            await forward_host_changes(self.cfg, link.send)
        except (OSError, ConnectionError) as e:
            log.warning("mountInotify: host file events no longer reach the guest: %s", e)

    async def _start_ssh_forwards(self) -> None:
        """Unix-socket rules and `static` rules, over the SSH master (as Lima)."""
        from pylima.hostagent.portfwd import socket_rules, ssh_forward_args, static_rules
        from pylima.sshutil import ssh_argv

        rules = [*socket_rules(self.cfg.get("portForwards") or []),
                 *static_rules(self.cfg.get("portForwards") or [])]
        if self.cfg.get("plain"):
            rules = [r for r in rules if r.get("static")]
        for rule in rules:
            for spec, record in ssh_forward_args(rule):
                if rule.get("hostSocket") and not rule.get("reverse"):
                    Path(rule["hostSocket"]).parent.mkdir(parents=True, exist_ok=True)
                    with contextlib.suppress(FileNotFoundError):
                        Path(rule["hostSocket"]).unlink()
                if rule.get("reverse"):
                    await self._ssh(f"rm -f {shlex.quote(rule['guestSocket'])}")
                proc = await spawn_owned(
                    *ssh_argv(self.dir, self.name, "-O", "forward", *spec),
                    stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
                _, err = await proc.communicate()
                ev = {"protocol": record["protocol"], "guestAddr": record["guestAddr"],
                      "hostAddr": record["hostAddr"]}
                if proc.returncode:
                    msg = err.decode(errors="replace").strip()
                    log.warning("failed to set up forwarding %s from %s to %s: %s",
                                record["protocol"].upper(), record["guestAddr"],
                                record["hostAddr"], msg)
                    self._on_port_event({"type": "failed", **ev, "error": msg})
                    continue
                log.info("Forwarding %s from %s to %s (over SSH)", record["protocol"].upper(),
                         record["guestAddr"], record["hostAddr"])
                self._on_port_event({"type": "forwarding", **ev})
                self.ssh_forwards.append(record)
        if self.ssh_forwards:
            self._write_forwards()

    async def _keep_ssh_master(self) -> None:
        """After READY: a master that ends (`limactl shell --reconnect` exits it, so
        that new sessions log in anew; sshd restarted in the guest) is opened again,
        and the SSH forwards that rode on it are set up again."""
        while True:
            proc = self.ssh_master
            if proc is None:
                await asyncio.sleep(5)
            else:
                await proc.wait()
                log.info("The SSH master connection ended; opening a new one")
                await asyncio.sleep(0.2)
            await self._ensure_ssh_master(quiet=True)
            if self.ssh_master is not None and proc is not None:
                self.ssh_forwards = []
                await self._start_ssh_forwards()
                if self.forwarder is not None:
                    await self.forwarder.reforward_ssh()
                await self._reopen_socks_tunnels()

    async def _ensure_ssh_master(self, quiet: bool = False,
                                 connected: socket.socket | None = None) -> None:
        """A master connection that is up: the one there is, else a new one (on
        `connected`, a connection to sshd, when given; it is closed either way)."""
        proc = self.ssh_master
        if proc is not None and proc.returncode is None and (self.dir / dirs.SSH_SOCK).exists():
            if connected is not None:
                connected.close()
            return
        if proc is not None:
            await kill_and_reap(proc)
            self.ssh_master = None
        await self._start_ssh_master(quiet=quiet, connected=connected)

    async def _start_ssh_master(self, quiet: bool = False,
                                connected: socket.socket | None = None) -> None:
        """The SSH master connection, a child of the host agent (it dies with it).
        `quiet`: failing is expected (the guest may not let the user in yet).
        `connected`: a connection to sshd for the master to use."""
        from pylima.sshutil import ConnectedHandover, master_argv

        sock = self.dir / dirs.SSH_SOCK
        with contextlib.suppress(FileNotFoundError):
            sock.unlink()
        handover = ConnectedHandover(connected) if connected is not None else None
        try:
            proc = self.ssh_master = await spawn_owned(
                *master_argv(self.dir, self.name,
                             *(handover.proxy_options() if handover else ())),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        except BaseException:
            if handover is not None:
                handover.close()  # the probe's connection and the relay's socket
            raise
        if handover is not None and not await handover.give(10):
            log.debug("the SSH master did not take the probe's connection")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while not sock.exists() and proc.returncode is None and loop.time() < deadline:
            await asyncio.sleep(0.05)
        if not sock.exists():
            if proc.returncode is None:
                proc.kill()
            (log.debug if quiet else log.warning)(
                "Could not start the SSH master connection (status %s); shells "
                "will connect directly", await proc.wait())
            self.ssh_master = None

    async def _close_ssh_master(self) -> None:
        proc, self.ssh_master = self.ssh_master, None
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        with contextlib.suppress(OSError):
            (self.dir / dirs.SSH_SOCK).unlink()

    async def _serve_api(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5)
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                key, _, value = line.decode(errors="replace").partition(":")
                if key.strip().lower() == "content-length" and value.strip().isdigit():
                    length = int(value.strip())
            payload = await asyncio.wait_for(reader.readexactly(length), 5) if length else b""
            parts = request.decode(errors="replace").split()
            method, path = (parts[0], parts[1]) if len(parts) > 1 else ("", "")
            if path == "/v1/info":
                # Lima's field; pylima adds the active forwards.
                body = json.dumps({"sshLocalPort": self.ssh_port,
                                   "portForwards": self._active_forwards()}).encode()
                status = "200 OK"
            elif path == "/v1/snapshot" and method == "POST":
                status, reply = await self._snapshot_request(payload)
                body = json.dumps(reply).encode()
            elif path == "/v1/tunnel" and method == "POST":
                status, reply = await self._tunnel_request(payload)
                body = json.dumps(reply).encode()
            else:
                body = json.dumps({"message": "not found"}).encode()
                status = "404 Not Found"
            writer.write(f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
                         f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                         + body)
            await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    # ---- SOCKS tunnels (`limactl tunnel`) ----

    async def _tunnel_request(self, payload: bytes) -> tuple[str, dict[str, Any]]:
        try:
            req = json.loads(payload or b"{}")
            port, close = int(req.get("port") or 0), bool(req.get("close"))
        except (ValueError, AttributeError, TypeError):
            return "400 Bad Request", {"message": "malformed request"}
        try:
            await self.socks_tunnel(port, close=close)
        except LimaError as e:
            return "500 Internal Server Error", {"message": e.message, "hint": e.hint}
        return "200 OK", {"port": port}

    async def socks_tunnel(self, port: int, *, close: bool = False) -> None:
        """Open (or close) a SOCKS5 proxy on 127.0.0.1:`port` on the SSH master. The
        host agent keeps the list, so that a renewed master gets them again; they end
        with the master, that is with the host agent."""
        if not 1 <= port <= 65535:
            raise LimaError(f"invalid socks port {port}")
        if not close and (self.ssh_master is None or self.ssh_master.returncode is not None):
            raise LimaError(f"instance `{self.name}` has no SSH master connection yet",
                            hint="retry once `limactl start` has finished")
        err = await self._master_forward("cancel" if close else "forward",
                                         ["-D", f"127.0.0.1:{port}"])
        if err is not None and not close:
            raise LimaError(f"failed to open the SOCKS tunnel on 127.0.0.1:{port}: {err}")
        if close:
            self.socks_tunnels.discard(port)
        else:
            log.info("SOCKS tunnel on 127.0.0.1:%d", port)
            self.socks_tunnels.add(port)

    async def _master_forward(self, op: str, spec: list[str]) -> str | None:
        """`ssh -O OP SPEC` on the master; None when it worked, else why not."""
        from pylima.sshutil import ssh_argv

        rc, _, err = await run_owned(ssh_argv(self.dir, self.name, "-O", op, *spec),
                                     timeout=30)
        if rc == 0:
            return None
        lines = err.decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else f"exit status {rc}"

    async def _reopen_socks_tunnels(self) -> None:
        for port in sorted(self.socks_tunnels):
            err = await self._master_forward("forward", ["-D", f"127.0.0.1:{port}"])
            if err is not None:
                log.warning("SOCKS tunnel on 127.0.0.1:%d could not be opened again: %s",
                            port, err)
                self.socks_tunnels.discard(port)

    # ---- snapshots of the running VM ----

    async def _snapshot_request(self, payload: bytes) -> tuple[str, dict[str, Any]]:
        try:
            req = json.loads(payload or b"{}")
            action, tag = str(req.get("action") or ""), str(req.get("tag") or "")
        except (ValueError, AttributeError):
            return "400 Bad Request", {"message": "malformed request"}
        try:
            out = await self.snapshot(action, tag)
        except LockError as e:
            return "409 Conflict", {"message": e.message, "hint": e.hint}
        except LimaError as e:
            return "500 Internal Server Error", {"message": e.message, "hint": e.hint}
        except Exception as e:  # the caller gets one line; the log has the rest
            log.exception("snapshot %s", action)
            return "500 Internal Server Error", {
                "message": f"snapshot {action} failed: {type(e).__name__}: {e}",
                "hint": f"see {self.dir / dirs.HA_STDERR_LOG}"}
        return "200 OK", {"output": out}

    async def snapshot(self, action: str, tag: str) -> str:
        """`create`, `apply`, `delete` or `list` on the running VM, one at a time;
        the table for `list`, else ""."""
        driver = self.driver
        if not isinstance(driver, Snapshotter):
            raise LimaError(f"driver `{driver.name if driver else '?'}` does not support "
                            "snapshots")
        if action not in ("create", "apply", "delete", "list"):
            raise LimaError(f"unknown snapshot action `{action}`")
        if self.snapshot_lock.locked():
            raise LockError(f"instance `{self.name}` is busy: another snapshot command is "
                            "working on it", hint="retry when it has finished")
        if action in ("create", "apply") and not self.boot_done.is_set():
            raise LockError(f"instance `{self.name}` is still starting",
                            hint="retry once `limactl start` has finished")
        async with self.snapshot_lock:
            if action == "list":
                return await driver.list_snapshots(running=True)
            log.info("Snapshot: %s %s", action, tag)
            if action == "create":
                await driver.create_snapshot(tag, running=True)
            elif action == "delete":
                await driver.delete_snapshot(tag, running=True)
            else:
                await driver.apply_snapshot(tag, running=True)
                await self._after_snapshot_apply()
            return ""

    async def _after_snapshot_apply(self) -> None:
        """The guest now runs from the snapshot's state: its clock is the snapshot's
        time, its TCP connections and listening sockets are those of then. Set the
        clock, renew the SSH master (and with it the SSH forwards), take the guest
        agent's listening ports afresh and mount reverse-sshfs mounts again."""
        import time

        link = self.guest_link
        if link is not None:
            try:
                r = await link.request("sync-time", time=time.time(), timeout=20)
                if r.get("error"):
                    log.warning("Time sync after applying the snapshot: %s", r["error"])
                else:
                    log.info("Time sync after applying the snapshot: %s",
                             f"adjusted ({r.get('driftMs')} ms off)" if r.get("adjusted")
                             else "in sync")
            except (TimeoutError, OSError, ConnectionError) as e:
                log.warning("Time sync after applying the snapshot failed: %s", e)
        else:
            rc, _, err = await self._ssh("sudo", "-n", "date", "-s", f"@{time.time():.3f}")
            if rc:
                log.warning("Could not set the guest clock after applying the snapshot: %s",
                            err.decode(errors="replace").strip())
        # A new master: _keep_ssh_master opens it and sets the SSH forwards up again.
        master = self.ssh_master
        if master is not None and master.returncode is None:
            master.terminate()
        if link is not None and self.forwarder is not None:
            # As for a new guest agent: every forward (and relay) is set up again.
            self.forwarder.session = ""
            link.snapshot_seen.clear()
            asyncio.create_task(link.hello_until_answered())
        if self.mounts.mounts and self.mounts.mount_type == "reverse-sshfs":
            for problem in await self.mounts.remount_reverse_sshfs():
                log.warning("%s", problem)


def adopt_lock(name: str, lock_fd: int | None) -> int | None:
    """The instance lock for this host agent: the descriptor `limactl start` handed
    over (already locked), or the lock taken now; None when another process owns the
    instance."""
    import fcntl

    from pylima.store.lock import try_lock

    if lock_fd is not None:
        try:
            # Our own open file description: this succeeds only if it is the locked one.
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return None
        os.set_inheritable(lock_fd, False)  # nothing the agent starts may keep it
        return lock_fd
    return try_lock(name)


def main(name: str, pidfile: str, socket_path: str, lock_fd: int | None = None,
         show_progress: bool = False) -> int:
    # Every socket, pid file and key the agent creates is the user's alone. Its
    # children keep the user's umask (QEMU's 9p and virtiofsd create the guest's files
    # with it); the driver narrows the modes of the sockets they create.
    from pylima import process

    user_umask = process.child_umask = os.umask(0o077)
    try:
        return _main(name, pidfile, socket_path, lock_fd, show_progress)
    finally:
        # main() may run inside another Python process (the API, tests): leave its
        # umask as it was
        os.umask(user_umask)
        process.child_umask = None


def _main(name: str, pidfile: str, socket_path: str, lock_fd: int | None,
          show_progress: bool) -> int:
    fd = adopt_lock(name, lock_fd)
    if fd is None:
        from pylima.store.lock import lock_holders

        holders = lock_holders(name)
        who = f" (process {', '.join(map(str, holders))})" if holders else ""
        # Nothing is written or removed: every file of the instance is the owner's.
        log.error("instance `%s` is owned by another process%s; not starting a second "
                  "host agent", name, who)
        return 1
    agent = HostAgent(name, Path(pidfile), Path(socket_path), show_progress=show_progress)
    try:
        return asyncio.run(agent.run())
    except KeyboardInterrupt:  # pragma: no cover
        return 130
    finally:
        sys.stdout.flush()
        os.close(fd)
