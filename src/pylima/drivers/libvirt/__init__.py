"""The libvirt driver (`vmType: libvirt`): instances on a local or remote libvirt
host (`vmOpts.libvirt.uri`: qemu:///session, qemu:///system,
qemu+ssh://user@host/system), behind `drivers.Driver` like the QEMU driver.

At each start the host agent, through this driver: connects to the URI, reads the
domain capabilities (KVM when the host offers it, else TCG), makes sure the base
image (and the kernel and initrd of images that boot directly) are volumes in the
pool (uploaded once, named by their sha256, shared by this LIMA_HOME's instances),
makes the instance's disk a qcow2 copy-on-write volume over the image (first start
only), uploads this boot's cidata ISO, and creates a TRANSIENT domain with
VIR_DOMAIN_START_AUTODESTROY (`domain.build_domain_xml`, pure). libvirt destroys such
a domain when the connection that created it closes: the host agent's connection,
so the domain never outlives its host agent, however the agent ends (one owner per
instance, as with QEMU).

The guest is on QEMU's user-mode network, the same as the QEMU driver's
(192.168.5.0/24), with guest port 22 on the libvirt host's 127.0.0.1. libvirt 9.0
(Debian 12) refuses `<backend type='passt'/>` and its plain `<interface type='user'>`
takes no port forwards, so the NIC is passed to QEMU in libvirt's QEMU namespace
(`domain.user_network_args`). For a local host the driver forwards guest ports the
way the QEMU driver does (`hostfwd_add` on QEMU's monitor, through libvirt); for a
remote host that would listen on the remote host, so guest ports go over the SSH
master instead, and the driver holds an SSH local forward (`ssh -N -L`, to the URI's
user@host, with its port and keyfile) from the host agent's SSH port to the guest's
port there, so that everything else (ssh.config, the SSH master, reverse-sshfs) is
unchanged. Mounts are reverse-sshfs.

Files it owns in the instance directory: libvirt.pid (the host agent's pid while the
domain runs: `limactl list`'s driver state), serial.log (the console, read from
libvirt), ga.sock (local session URIs: the guest agent's port).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import threading
from pathlib import Path
from typing import Any, ClassVar

from pylima.drivers import DriverFeatures, DriverInfo, SnapshotError
from pylima.drivers.libvirt import domain as dx
from pylima.drivers.qemu.snapshot import QemuSnapshots
from pylima.errors import ConfigError, LimaError

log = logging.getLogger("pylima.hostagent")

PID_FILE = "libvirt.pid"
POLL_INTERVAL = 1.0
# A libvirt call on a live connection answers in milliseconds; one that has not
# answered in this time means the libvirt host (or the network to it) is gone.
ANSWER_TIMEOUT = 30.0
TUNNEL_TIMEOUT = 30.0
GUEST_AGENT_CONNECT_TIMEOUT = 10.0
# How many SSH ports on a remote host are tried (QEMU fails when one is taken).
REMOTE_PORT_TRIES = 5


def _is_root() -> bool:
    return os.geteuid() == 0


def resolved_opts(cfg: dict[str, Any]) -> tuple[dx.LibvirtURI, dict[str, str]]:
    opts = dx.libvirt_opts(cfg, is_root=_is_root())
    return dx.parse_uri(opts["uri"]), opts


def names_for(name: str) -> dx.Names:
    from pylima.store import dirs

    return dx.Names(dx.home_prefix(str(dirs.lima_home())), name)


class LibvirtDriver(QemuSnapshots):
    name: ClassVar[str] = "libvirt"
    # The disk is a volume in the libvirt host's pool, not a file of the instance
    # directory.
    local_disk: ClassVar[bool] = False

    def __init__(self, name: str, inst_dir: Path, cfg: dict[str, Any]) -> None:
        self.instance_name = name
        self.dir = Path(inst_dir)
        self.cfg = cfg
        self.names = names_for(name)
        self.conn: Any = None
        self.dom: Any = None
        self.tunnel: asyncio.subprocess.Process | None = None
        self._console: threading.Thread | None = None
        self._gone = asyncio.Event()
        self._watch: asyncio.Task[None] | None = None
        self._ga_socket = ""
        self._exit_status = 0
        self._unresponsive = False

    # ---- without an instance ----

    @classmethod
    def validate(cls, cfg: dict[str, Any]) -> list[str]:
        errs = dx.opts_errors(cfg)
        if errs:
            raise ConfigError(errs[0])
        uri, _ = resolved_opts(cfg)
        dx.libvirt_arch(str(cfg.get("arch")))
        dx._memory_mib(cfg)
        mount_type = cfg.get("mountType")
        if cfg.get("mounts") and mount_type in ("9p", "virtiofs"):
            where = (f"the libvirt host `{uri.host}` is remote: it cannot see this host's "
                     "files" if uri.remote else "vmType `libvirt` shares host directories "
                     "over SSH only")
            raise ConfigError(f"field `mountType` `{mount_type}` is not supported by vmType "
                              f"`libvirt`: {where}", hint="use `mountType: reverse-sshfs`")
        for nw in cfg.get("networks") or []:
            name = nw.get("lima") or nw.get("socket") or "?"
            raise ConfigError(f"network `{name}` is not supported by vmType `libvirt`",
                              hint="use `vmOpts.libvirt.network` for a libvirt network")
        display = (cfg.get("video") or {}).get("display")
        if display not in (None, "", "none", "default"):
            raise ConfigError(f"field `video.display` `{display}` is not supported by vmType "
                              "`libvirt`: the domain has a serial console only",
                              hint="set `video.display: none`")
        return []

    @classmethod
    def check_start(cls, cfg: dict[str, Any]) -> None:
        """Before anything is downloaded or created: the binding, the URI answers, the
        pool (and network) exist."""
        from pylima.drivers.libvirt import conn as lc

        uri, opts = resolved_opts(cfg)
        c = lc.connect(uri)
        try:
            lc.lookup_pool(c, uri, opts["pool"])
            if opts["network"]:
                lc.check_network(c, uri, opts["network"])
            facts_for(c, uri, cfg)
        finally:
            with contextlib.suppress(Exception):
                c.close()

    @classmethod
    def host_info(cls) -> dict[str, Any]:
        return {}

    @classmethod
    def delete_instance(cls, name: str, inst_dir: Path, cfg: dict[str, Any]) -> list[str]:
        """Remove the instance's domain (if libvirt still has one) and its volumes,
        and nothing else: the shared base volumes stay. Returns what was removed."""
        from pylima.drivers.libvirt import conn as lc

        uri, opts = resolved_opts(cfg)
        names = names_for(name)
        c = lc.connect(uri)
        removed = []
        lv = lc.binding()
        try:
            with contextlib.suppress(lv.libvirtError):
                d = c.lookupByName(names.domain)
                with contextlib.suppress(lv.libvirtError):
                    d.destroy()
                with contextlib.suppress(lv.libvirtError):
                    d.undefine()
                removed.append(f"domain {names.domain}")
            try:
                pool = c.storagePoolLookupByName(opts["pool"])
            except lv.libvirtError:
                return removed
            with contextlib.suppress(lv.libvirtError):
                pool.refresh(0)
            for vol in names.instance_volumes():
                try:
                    if lc.delete_volume(pool, vol):
                        removed.append(f"volume {vol}")
                except lv.libvirtError as e:
                    raise LimaError(f"libvirt at `{uri.uri}`: cannot delete volume `{vol}`: "
                                    f"{lc.error_line(e)}") from None
        finally:
            with contextlib.suppress(Exception):
                c.close()
        return removed

    # ---- one instance ----

    @property
    def info(self) -> DriverInfo:
        remote = resolved_opts(self.cfg)[0].remote
        return DriverInfo(self.name, virtio_port=dx.GUEST_AGENT_PORT if self._ga_socket else "",
                          instance_dir=str(self.dir),
                          features=DriverFeatures(supported_image_formats=("qcow2", "raw"),
                                                  host_port_forwarding=not remote,
                                                  guest_address=dx.SLIRP_IP_ADDRESS))

    @property
    def pid(self) -> int:
        return os.getpid() if self.dom is not None and not self._gone.is_set() else 0

    def create(self) -> None:
        """Nothing: the volumes are made at the first start."""

    def serve_mounts(self, mounts: list[dict[str, Any]]) -> list[str | None]:
        return [None] * len(mounts)  # reverse-sshfs: served by the host agent

    async def start(self, cfg: dict[str, Any], *, ssh_local_port: int,
                    mount_tags: list[str]) -> None:
        self.cfg = cfg
        uri, _ = resolved_opts(cfg)
        try:
            for attempt in range(REMOTE_PORT_TRIES if uri.remote else 1):
                port = random.randint(30000, 60999) if uri.remote else ssh_local_port
                try:
                    await asyncio.to_thread(self._start_domain, port)
                    break
                except _PortTaken:
                    log.info("Port %d is taken on the libvirt host; trying another", port)
                    if attempt == REMOTE_PORT_TRIES - 1:
                        raise LimaError(f"libvirt at `{uri.uri}`: no free port for the "
                                        "guest's SSH on its 127.0.0.1") from None
            if uri.remote:
                await self._open_tunnel(uri, ssh_local_port, port)
        except BaseException:
            await self.close()
            raise
        (self.dir / PID_FILE).write_text(f"{os.getpid()}\n")
        self._watch = asyncio.create_task(self._watch_domain())

    def _start_domain(self, ssh_port: int) -> None:
        """Connect, put the volumes in place and create the domain (blocking)."""
        from pylima.config.defaults import mac_address
        from pylima.config.units import parse_size
        from pylima.drivers.libvirt import conn as lc
        from pylima.images.disk import base_image_path
        from pylima.images.fileutil import detect_image_format, virtual_size
        from pylima.store import dirs

        cfg = self.cfg
        uri, opts = resolved_opts(cfg)
        lv = lc.binding()
        if self.conn is None:
            self.conn = lc.connect(uri)
        c = self.conn
        facts = facts_for(c, uri, cfg)
        log.info("libvirt at `%s`: domain type `%s` (%s)", uri.uri, facts.domain_type,
                 "KVM" if facts.domain_type == "kvm" else "TCG")
        pool = lc.lookup_pool(c, uri, opts["pool"])
        if opts["network"]:
            lc.check_network(c, uri, opts["network"])
        with contextlib.suppress(lv.libvirtError):
            pool.refresh(0)
        image = base_image_path(self.dir)
        if image is None:
            raise LimaError(f"instance `{self.instance_name}` has no image")
        fmt = detect_image_format(image)
        names = self.names
        base = lc.ensure_base_volume(c, pool, uri, lambda d: names.base_volume(d, "image"),
                                     image, "raw")
        disk = lc.find_volume(pool, names.disk_volume)
        size = max(parse_size(cfg.get("disk") or 0), virtual_size(image))
        if disk is None:
            log.info("Creating volume `%s` over `%s`", names.disk_volume, base.name())
            disk = lc.create_overlay(pool, uri, names.disk_volume, base, fmt, size)
        else:
            lc.grow_volume(disk, uri, size)
        kernel = initrd = cmdline = ""
        if (self.dir / dirs.KERNEL).is_file():
            kernel = lc.ensure_base_volume(
                c, pool, uri, lambda d: names.base_volume(d, "kernel"),
                self.dir / dirs.KERNEL, "raw").path()
            if (self.dir / dirs.INITRD).is_file():
                initrd = lc.ensure_base_volume(
                    c, pool, uri, lambda d: names.base_volume(d, "initrd"),
                    self.dir / dirs.INITRD, "raw").path()
            with contextlib.suppress(OSError):
                cmdline = (self.dir / dirs.KERNEL_CMDLINE).read_text().strip()
        # a firmware boot's UEFI variables: a file of the pool where its volumes are
        # files (else where libvirt puts them, which `delete` cannot reach)
        directory = "" if kernel else lc.pool_path(pool)
        nvram = f"{directory}/{names.nvram_volume}" if directory else ""
        lc.delete_volume(pool, names.cidata_volume)
        lc.upload_volume(c, pool, uri, names.cidata_volume, self.dir / dirs.CIDATA_ISO, "raw")
        # A domain of this name is this instance's (the prefix is this LIMA_HOME's and
        # the instance lock is held): one left over is destroyed.
        with contextlib.suppress(lv.libvirtError):
            old = c.lookupByName(names.domain)
            log.warning("Removing the leftover domain `%s`", names.domain)
            with contextlib.suppress(lv.libvirtError):
                old.destroy()
            with contextlib.suppress(lv.libvirtError):
                old.undefine()
        self._ga_socket = str(self.dir / dirs.GA_SOCK) \
            if not uri.remote and uri.path == "/session" else ""
        if self._ga_socket:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._ga_socket)
        spec = dx.DomainSpec(
            name=names.domain, instance=self.instance_name, lima_home=str(dirs.lima_home()),
            facts=facts, boot=dx.DomainBoot(pool=opts["pool"], disk_volume=names.disk_volume,
                                            cidata_volume=names.cidata_volume, kernel=kernel,
                                            initrd=initrd, cmdline=cmdline, nvram=nvram),
            ssh_host_port=ssh_port, mac_address=mac_address(names.prefix, self.instance_name),
            network=opts["network"], guest_agent_socket=self._ga_socket)
        xml = dx.build_domain_xml(cfg, spec)
        log.debug("Domain XML:\n%s", xml)
        try:
            self.dom = c.createXML(xml, lv.VIR_DOMAIN_START_AUTODESTROY)
        except lv.libvirtError as e:
            line = lc.error_line(e)
            if uri.remote and ("host forwarding rule" in line or "in use" in line):
                raise _PortTaken() from None
            raise LimaError(f"libvirt at `{uri.uri}`: cannot start domain `{names.domain}`: "
                            f"{line}") from None
        log.info("Domain `%s` is running", names.domain)
        self._console = threading.Thread(target=self._relay_console, daemon=True)
        self._console.start()

    def _relay_console(self) -> None:
        """The domain's serial console, into serial.log (as QEMU's serial.log)."""
        from pylima.drivers.libvirt import conn as lc
        from pylima.store import dirs

        lv = lc.binding()
        try:
            stream = self.conn.newStream(0)
            self.dom.openConsole(None, stream, lv.VIR_DOMAIN_CONSOLE_FORCE)
            with open(self.dir / dirs.SERIAL_LOG, "ab", buffering=0) as f:
                while True:
                    data = stream.recv(65536)
                    if not isinstance(data, bytes) or not data:
                        break
                    f.write(data)
        except Exception as e:  # noqa: BLE001 - the console is a log, not the VM
            log.debug("serial console relay ended: %s", e)

    async def _open_tunnel(self, uri: dx.LibvirtURI, local_port: int, remote_port: int
                           ) -> None:
        """`ssh -N -L` from this host's 127.0.0.1:`local_port` to the guest's SSH port on
        the libvirt host; returns once it listens."""
        from pylima.process import spawn_owned

        argv = ["ssh", "-N", "-o", "ExitOnForwardFailure=yes", "-o", "ServerAliveInterval=10",
                "-o", "ConnectTimeout=15", *uri.ssh_args(),
                "-L", f"127.0.0.1:{local_port}:127.0.0.1:{remote_port}", uri.ssh_destination]
        log.debug("SSH tunnel: %s", argv)
        proc = self.tunnel = await spawn_owned(*argv, stdin=asyncio.subprocess.DEVNULL,
                                               stdout=asyncio.subprocess.DEVNULL,
                                               stderr=asyncio.subprocess.PIPE)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TUNNEL_TIMEOUT
        while loop.time() < deadline:
            if proc.returncode is not None:
                break
            try:
                _, w = await asyncio.open_connection("127.0.0.1", local_port)
                w.close()
                log.info("SSH tunnel to %s: 127.0.0.1:%d -> 127.0.0.1:%d there",
                         uri.ssh_destination, local_port, remote_port)
                return
            except OSError:
                await asyncio.sleep(0.2)
        assert proc.stderr is not None
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        err = (await proc.stderr.read()).decode(errors="replace").strip().splitlines()
        why = err[-1] if err else f"ssh exited with status {proc.returncode}"
        raise LimaError(f"cannot reach the guest's SSH port on `{uri.ssh_destination}`: {why}")

    async def _watch_domain(self) -> None:
        """Poll libvirt until the domain is gone (a transient domain that stops is
        forgotten), the connection to libvirt fails or gives no answer for
        ANSWER_TIMEOUT seconds, or the SSH tunnel to a remote host ends. All but the
        first are errors: `wait` returns 1 and the host agent reports the VM's end as
        unexpected, with the cause in its log."""
        from pylima.drivers.libvirt import conn as lc

        lv = lc.binding()
        uri = resolved_opts(self.cfg)[0]
        why = ""
        while True:
            try:
                active = await _libvirt_call(self.dom.isActive, timeout=ANSWER_TIMEOUT)
            except lv.libvirtError as e:
                if e.get_error_code() != lv.VIR_ERR_NO_DOMAIN:  # else: it powered off
                    why = f"lost the connection to libvirt at `{uri.uri}`: {lc.error_line(e)}"
                break
            except TimeoutError:
                why = (f"libvirt at `{uri.uri}` has not answered for {ANSWER_TIMEOUT:g} s "
                       "(the host or the network to it is down)")
                self._unresponsive = True
                break
            if not active:
                break
            if self.tunnel is not None and self.tunnel.returncode is not None:
                why = (f"the SSH tunnel to `{uri.ssh_destination}` ended (status "
                       f"{self.tunnel.returncode})")
                break
            await asyncio.sleep(POLL_INTERVAL)
        if why:
            log.error("%s; libvirt destroys the domain once it sees the connection gone "
                      "(autodestroy)", why)
            self._exit_status = 1
        self._ended()

    def _ended(self) -> None:
        self._gone.set()
        with contextlib.suppress(OSError):
            (self.dir / PID_FILE).unlink()

    async def wait(self) -> int:
        if self.dom is None:
            raise LimaError("the domain has not been started")
        await self._gone.wait()
        return self._exit_status

    async def stop(self, timeout: float) -> None:
        """ACPI shutdown through libvirt; destroy after `timeout` seconds."""
        if self.dom is None or self._gone.is_set():
            return
        from pylima.drivers.libvirt import conn as lc

        lv = lc.binding()
        try:
            await _libvirt_call(self.dom.shutdown, timeout=ANSWER_TIMEOUT)
        except (lv.libvirtError, TimeoutError) as e:
            log.warning("ACPI shutdown through libvirt failed: %s",
                        lc.error_line(e) if isinstance(e, lv.libvirtError) else "no answer")
            await self.kill()
            return
        try:
            await asyncio.wait_for(self._gone.wait(), timeout)
        except TimeoutError:
            log.warning("The guest did not power off in %g s; destroying the domain", timeout)
            await self.kill()

    async def kill(self) -> None:
        if self.dom is None or self._gone.is_set():
            return
        from pylima.drivers.libvirt import conn as lc

        lv = lc.binding()
        if not self._unresponsive:
            with contextlib.suppress(lv.libvirtError, TimeoutError):
                await _libvirt_call(self.dom.destroy, timeout=ANSWER_TIMEOUT)
        self._ended()

    async def close(self) -> None:
        await self.kill()
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watch
        if self.tunnel is not None:
            from pylima.process import kill_and_reap

            await kill_and_reap(self.tunnel)
        conn, self.conn = self.conn, None
        if conn is not None:
            # Closing the connection also destroys the domain (AUTODESTROY).
            with contextlib.suppress(Exception):
                await _libvirt_call(conn.close, timeout=0.1 if self._unresponsive else
                                    ANSWER_TIMEOUT)
        if self._console is not None:
            await asyncio.to_thread(self._console.join, 5)
        self._ended()
        if self._ga_socket:
            with contextlib.suppress(OSError):
                os.unlink(self._ga_socket)

    async def guest_agent_connect(
            self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        if not self._ga_socket:
            return None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + GUEST_AGENT_CONNECT_TIMEOUT
        while True:
            try:
                return await asyncio.open_unix_connection(self._ga_socket)
            except OSError:
                if loop.time() >= deadline:
                    return None
                await asyncio.sleep(0.1)


    # ---- host port forwarding (local hosts: QEMU's hostfwd, through libvirt) ----

    async def _hmp(self, command: str) -> str:
        """`_hmp_raw` with a failure as its output: libvirt's own line."""
        from pylima.drivers.libvirt import conn as lc

        try:
            return await self._hmp_raw(command)
        except LimaError as e:
            return lc.error_line(e.__cause__) if e.__cause__ is not None else e.message

    async def add_host_forward(self, protocol: str, host_ip: str, host_port: int,
                               guest_port: int) -> str:
        host = f"[{host_ip}]" if ":" in host_ip else host_ip
        out = await self._hmp(f"hostfwd_add {dx.NETDEV} "
                              f"{protocol}:{host}:{host_port}-:{guest_port}")
        if not out.strip():
            return ""
        text = " ".join(out.split())
        if "Could not set up host forwarding rule" in text:
            return (f"cannot listen on {host}:{host_port} (in use by another program, or "
                    "not permitted)")
        return text

    async def remove_host_forward(self, protocol: str, host_ip: str, host_port: int) -> None:
        host = f"[{host_ip}]" if ":" in host_ip else host_ip
        out = await self._hmp(f"hostfwd_remove {dx.NETDEV} {protocol}:{host}:{host_port}")
        if out.strip():
            log.debug("hostfwd_remove: %s", out.strip())


    # ---- snapshots (`limactl snapshot`: QemuSnapshots, as the QEMU driver's) ----

    async def _hmp_raw(self, command: str) -> str:
        """A human-monitor command's output, through libvirt; LimaError when libvirt
        could not pass it."""
        from pylima.drivers.libvirt import conn as lc

        lv = lc.binding()
        if self.dom is None or self._gone.is_set():
            raise LimaError("the domain is not running")
        try:
            out = await asyncio.to_thread(lc.qemu_binding().qemuMonitorCommand, self.dom,
                                          command, 1)  # VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP
        except lv.libvirtError as e:
            raise LimaError(f"libvirt at `{resolved_opts(self.cfg)[0].uri}`: monitor "
                            f"command `{command.split()[0]}` failed: {lc.error_line(e)}"
                            ) from e
        return str(out or "")

    async def _disk_image(self) -> tuple[str, list[str]]:
        """The disk volume's path on the libvirt host, and the ssh command line that
        runs a command there ([] for a local host): a stopped instance is snapshotted
        with qemu-img on its volume, as libvirt itself does for offline snapshots."""
        from pylima.drivers.libvirt import conn as lc

        uri, opts = resolved_opts(self.cfg)

        def lookup() -> str:
            c = lc.connect(uri)
            try:
                pool = lc.lookup_pool(c, uri, opts["pool"])
                vol = lc.find_volume(pool, self.names.disk_volume)
                if vol is None:
                    raise SnapshotError(f"instance `{self.instance_name}` has no disk "
                                        f"volume on `{uri.uri}` yet",
                                        hint=f"run `limactl start {self.instance_name}` "
                                        "once")
                return str(vol.path())
            finally:
                with contextlib.suppress(Exception):
                    c.close()

        path = await asyncio.to_thread(lookup)
        remote = ["ssh", *uri.ssh_args(), uri.ssh_destination] if uri.remote else []
        return path, remote


async def _libvirt_call(fn: Any, *args: Any, timeout: float) -> Any:
    """`fn(*args)` (a blocking libvirt call) in a daemon thread; TimeoutError after
    `timeout` seconds. The thread of a call that never returns (a connection whose
    peer is gone) does not keep the host agent from exiting, as the default
    executor's would."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[Any] = loop.create_future()

    def settle(value: Any, error: BaseException | None) -> None:
        if not fut.done():
            if error is not None:
                fut.set_exception(error)
            else:
                fut.set_result(value)

    def run() -> None:
        try:
            value, error = fn(*args), None
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            value, error = None, e
        with contextlib.suppress(RuntimeError):  # the loop has closed meanwhile
            loop.call_soon_threadsafe(settle, value, error)

    threading.Thread(target=run, name="libvirt-call", daemon=True).start()
    return await asyncio.wait_for(fut, timeout)


class _PortTaken(Exception):
    pass


def facts_for(c: Any, uri: dx.LibvirtURI, cfg: dict[str, Any]) -> dx.HostFacts:
    """The host's domain capabilities for the instance's arch: KVM when offered (and,
    for a local host, when it really runs guests: `local_kvm_problem`)."""
    from pylima.drivers.libvirt import conn as lc

    lv = lc.binding()
    arch = dx.libvirt_arch(str(cfg.get("arch")))
    machine = dx.default_machine(arch)
    for dtype in ("kvm", "qemu"):
        try:
            caps = c.getDomainCapabilities(None, arch, machine, dtype, 0)
        except lv.libvirtError as e:
            if dtype == "qemu":
                raise LimaError(f"libvirt at `{uri.uri}` cannot run `{arch}` guests: "
                                f"{lc.error_line(e)}") from None
            continue
        facts = dx.parse_domain_caps(caps, dx.pick_domain_type(dtype == "kvm"))
        if dtype == "kvm" and not uri.remote:
            problem = local_kvm_problem(str(cfg.get("arch")), facts.emulator)
            if problem:
                log.info("libvirt at `%s` offers KVM, but %s: using TCG", uri.uri, problem)
                continue
        return facts
    raise AssertionError("unreachable")


def local_kvm_problem(arch: str, emulator: str) -> str:
    """Why KVM on this host does not really run guests ("" when it does, or when this
    user cannot tell): the QEMU driver's verdict (its cheap checks, then its timed
    test guest, cached; $PYLIMA_QEMU_ACCEL), for the QEMU that libvirt runs. A user
    who may not open /dev/kvm leaves the choice to libvirt, whose QEMU may."""
    from pylima.drivers.qemu.probe import ACCEL_ENV, choose_accel, qemu_version

    if not os.access("/dev/kvm", os.R_OK | os.W_OK) and \
            os.environ.get(ACCEL_ENV, "auto").strip().lower() in ("", "auto"):
        return ""
    try:
        accel, why = choose_accel(arch, emulator, qemu_version(emulator))
    except (LimaError, OSError, ValueError) as e:
        log.debug("KVM check of `%s` failed: %s", emulator, e)
        return ""
    return why if accel == "tcg" else ""
