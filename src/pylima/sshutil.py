"""SSH to a guest: the instance's ssh.config (usable with plain `ssh -F`), a pinned
host key generated on the host, and the argv for shell/copy/probes.

Beyond Lima: the guest's SSH host key is generated here and handed to the guest in
cidata, so ssh.config pins it (StrictHostKeyChecking yes) instead of turning host
key checking off.
"""

from __future__ import annotations

import os
import shlex
import socket
from pathlib import Path
from typing import Any

from pylima.store import dirs

HOST_KEY = "ssh_host_ed25519_key"  # in the instance dir, 0600
KNOWN_HOSTS = "ssh_known_hosts"


def ensure_host_key(inst_dir: Path) -> tuple[str, str]:
    """(private, public) host key of the guest, generated once per instance."""
    key = inst_dir / HOST_KEY
    pub = inst_dir / (HOST_KEY + ".pub")
    if not (key.exists() and pub.exists()):
        from pylima import process

        for p in (key, pub):
            p.unlink(missing_ok=True)
        process.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C",
                     f"lima-{inst_dir.name}", "-f", str(key)],
                    hint="install the OpenSSH client: apt-get install openssh-client")
        os.chmod(key, 0o600)
    return key.read_text(), pub.read_text().strip()


def free_port() -> int:

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dot_ssh_identities(home: Path | None = None) -> list[Path]:
    """The private keys beside ~/.ssh/*.pub (a .pub without its private key, such as a
    certificate, is skipped): the extra identities of `ssh.loadDotSSHPubKeys`."""
    ssh_dir = (home or Path.home()) / ".ssh"
    return [p.with_suffix("") for p in sorted(ssh_dir.glob("*.pub"))
            if p.with_suffix("").is_file()]


_PUBKEY_TYPES = ("ssh-", "ecdsa-sha2-", "sk-ssh-", "sk-ecdsa-sha2-")


def dot_ssh_pubkeys(home: Path | None = None) -> tuple[list[str], list[str]]:
    """~/.ssh/*.pub for the guest's authorized_keys (`ssh.loadDotSSHPubKeys`), and
    Lima's warning for each file that is not an SSH public key."""
    keys, warnings = [], []
    for p in sorted(((home or Path.home()) / ".ssh").glob("*.pub")):
        try:
            text = p.read_text().strip()
        except (OSError, UnicodeDecodeError):
            text = ""
        if text.startswith(_PUBKEY_TYPES) and "\n" not in text:
            keys.append(text)
        else:
            warnings.append(f"public key `{p}` doesn't seem to be in ssh format")
    return keys, warnings


def forwarding_options(ssh_cfg: dict[str, Any] | None) -> list[tuple[str, str]]:
    """`ssh.forwardAgent`, `forwardX11`, `forwardX11Trusted` as ssh options, as Lima
    adds them to every connection of the instance (ssh.config, shell, the master)."""
    c = ssh_cfg or {}
    return [(key, "yes") for key, field in (("ForwardAgent", "forwardAgent"),
                                            ("ForwardX11", "forwardX11"),
                                            ("ForwardX11Trusted", "forwardX11Trusted"))
            if c.get(field)]


def render_ssh_config(name: str, inst_dir: Path, user: str, port: int,
                      ssh_cfg: dict[str, Any] | None = None,
                      extra_identities: list[Path] | tuple[Path, ...] = ()) -> str:
    """Lima's ssh.config shape, plus the pinned host key. `ssh_cfg` is the
    instance's `ssh` section (forwarding); `extra_identities` the ~/.ssh keys that
    `ssh.loadDotSSHPubKeys` adds after pylima's own."""
    q = _quote_path
    opts = [
        ("IdentityFile", q(dirs.config_dir() / dirs.USER_KEY)),
        *[("IdentityFile", q(p)) for p in extra_identities],
        ("PreferredAuthentications", "publickey"),
        ("Compression", "no"),
        ("BatchMode", "yes"),
        ("IdentitiesOnly", "yes"),
        ("GSSAPIAuthentication", "no"),
        ("User", user),
        ("ControlMaster", "auto"),
        ("ControlPath", q(inst_dir / dirs.SSH_SOCK)),
        ("ControlPersist", "yes"),
        *forwarding_options(ssh_cfg),
        ("Hostname", "127.0.0.1"),
        ("Port", str(port)),
        ("HostKeyAlias", f"lima-{name}"),
        ("UserKnownHostsFile", q(inst_dir / KNOWN_HOSTS)),
        ("StrictHostKeyChecking", "yes"),
        ("LogLevel", "ERROR"),
    ]
    lines = [f"Host lima-{name}"] + [f"  {k} {v}" for k, v in opts]
    return "\n".join(lines) + "\n"


def _quote_path(p: Any) -> str:
    return f'"{p}"'


def write_ssh_files(name: str, inst_dir: Path, user: str, port: int, host_pub: str,
                    ssh_cfg: dict[str, Any] | None = None) -> Path:
    (inst_dir / KNOWN_HOSTS).write_text(f"lima-{name} {host_pub}\n")
    cfg = inst_dir / dirs.SSH_CONFIG
    tmp = cfg.with_name(cfg.name + ".tmp")
    extra = dot_ssh_identities() if (ssh_cfg or {}).get("loadDotSSHPubKeys") else []
    tmp.write_text(render_ssh_config(name, inst_dir, user, port, ssh_cfg, extra))
    os.replace(tmp, cfg)
    return cfg


# X11 through the host agent's master connection goes to the display the master was
# started with (OpenSSH's multiplexing uses the master's DISPLAY, not the client's): so
# `limactl start` decides it, and a shell decides only where there is no master.
def master_socket(inst_dir: Path) -> Path:
    """The host agent's SSH master connection's control socket."""
    return inst_dir / dirs.SSH_SOCK


def x11_without_display(ssh_cfg: dict[str, Any] | None) -> bool:
    """`ssh.forwardX11` (or `forwardX11Trusted`) asked for with no DISPLAY to forward to."""
    c = ssh_cfg or {}
    return bool(c.get("forwardX11") or c.get("forwardX11Trusted")) \
        and not os.environ.get("DISPLAY")


X11_WITHOUT_DISPLAY = ("`ssh.forwardX11` is set, but DISPLAY is not: X11 forwarding is "
                       "off (set DISPLAY to the host's X server)")


# pylima's own sessions (mounts, the guest agent, readiness checks, provisioning)
# need no agent or X11 of the user's, whatever `ssh.forward*` says.
NO_FORWARDING = ("-o", "ForwardAgent=no", "-o", "ForwardX11=no")


def ssh_argv(inst_dir: Path, name: str, *extra: str, tty: bool = False,
             user_session: bool = False) -> list[str]:
    """ssh to the guest through the host agent's master connection when there is one.

    pylima's own invocations never become the master (`ControlMaster=no`): a master
    forked by ssh keeps the caller's stdout/stderr open, so whoever reads them (a pipe
    into `lima cat`, the host agent's readiness checks) would wait forever. The host
    agent starts the master itself, with its stdio on /dev/null (`master_argv`).
    A `user_session` (shell, `lima`, the Python API) gets the agent and X11
    forwarding ssh.config asks for; the others never do.
    """
    argv = ["ssh", "-F", str(inst_dir / dirs.SSH_CONFIG), "-o", "ControlMaster=no"]
    if not user_session:
        argv += NO_FORWARDING
    if tty:
        argv.append("-t")
    else:
        argv.append("-T")
    return [*argv, *extra, f"lima-{name}"]


# The key exchange of the host agent's own connections (the master and its boot-time
# waits): X25519 alone. OpenSSH 9's default adds sntrup761, a post-quantum exchange
# that costs the guest ~0.1 s more per connection under emulation, for a loopback
# connection to the user's own VM, which nobody else can record.
HOST_AGENT_KEX = ("-o", "KexAlgorithms=curve25519-sha256,curve25519-sha256@libssh.org")


def master_argv(inst_dir: Path, name: str, *extra: str) -> list[str]:
    """The persistent master connection, run in the foreground by its owner (the host
    agent) with stdio on /dev/null: no `-f` and no ControlPersist, which would fork
    it into the background, out of its owner's reach. `extra`: more ssh options."""
    # A session multiplexed over the master passes on only the variables the master's
    # own SendEnv names: COLORTERM, which `limactl shell` sends as Lima's does.
    return ["ssh", "-F", str(inst_dir / dirs.SSH_CONFIG), "-o", "ControlMaster=yes",
            "-o", "ControlPersist=no", "-o", "ConnectTimeout=10", "-o", "SendEnv=COLORTERM",
            *HOST_AGENT_KEX, *extra, "-N", f"lima-{name}"]


# The connection that heard sshd's greeting becomes the master's own: ssh takes a
# connected socket from its ProxyCommand (`ProxyUseFdpass`), and this one-line
# helper fetches it from the host agent over an abstract Unix socket whose name is
# a random token. Opening a new connection instead would cost the guest a sshd child
# for the probe (a `kex_exchange_identification` error in its journal) and the new
# connection's handshake: a second or two under emulation.
_FD_RELAY = ("import socket,sys;s=socket.socket(socket.AF_UNIX);"
             "s.connect(b'\\0pylima-ssh-'+bytes(sys.argv[1],'ascii'));"
             "f=socket.recv_fds(s,1,1)[1];socket.send_fds(socket.socket(fileno=1),[b'x'],f)")


class ConnectedHandover:
    """Hands `sock`, a connection to sshd, to the next ssh that runs with
    `proxy_options()`. Only a process of this user is given it."""

    def __init__(self, sock: socket.socket) -> None:
        import secrets

        self.sock = sock
        self.token = secrets.token_hex(16)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.setblocking(False)
        self.listener.bind("\0pylima-ssh-" + self.token)
        self.listener.listen(1)

    def proxy_options(self) -> tuple[str, ...]:
        import sys

        relay = " ".join(shlex.quote(a) for a in (
            sys.executable, "-I", "-S", "-c", _FD_RELAY, self.token))
        return ("-o", f"ProxyCommand={relay}", "-o", "ProxyUseFdpass=yes")

    async def give(self, timeout: float) -> bool:
        """Until the relay asks (True), or `timeout`; the connection is closed here
        either way."""
        import asyncio
        import struct

        loop = asyncio.get_running_loop()
        try:
            deadline = loop.time() + timeout
            while loop.time() < deadline:
                conn, _ = await asyncio.wait_for(loop.sock_accept(self.listener),
                                                 deadline - loop.time())
                with conn:
                    _, uid, _ = struct.unpack(
                        "3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
                    if uid != os.getuid():
                        continue
                    conn.setblocking(True)
                    socket.send_fds(conn, [b"x"], [self.sock.fileno()])
                    return True
            return False
        except (OSError, TimeoutError):
            return False
        finally:
            self.close()

    def close(self) -> None:
        self.listener.close()
        self.sock.close()


def _change_dir_command(cfg: dict[str, Any], workdir: str | None) -> str:
    """Lima's rule: --workdir wins; else the host cwd when a mount contains it (falling
    back to the host home); else the host home (which fails harmlessly when unmounted)."""
    home = os.path.expanduser("~")
    if workdir:
        return f"cd {shlex.quote(workdir)} || exit 1"
    cwd = os.getcwd()
    for m in cfg.get("mounts") or []:
        loc = str(m.get("location") or "")
        if loc and (cwd == loc or cwd.startswith(loc.rstrip("/") + "/")):
            return f"cd {shlex.quote(cwd)} || cd {shlex.quote(home)}"
    return f"cd {shlex.quote(home)}"


def remote_script(cfg: dict[str, Any], command: str | None, workdir: str | None,
                  shell: str | None, env: list[tuple[str, str]] | None = None) -> str:
    """The script ssh runs in the guest: change to the working directory, then the
    user's login shell, running `command` (shell syntax) when one is given. `env`
    (--preserve-env) is set before the login shell, so the guest's profile wins."""
    shell = shell or (cfg.get("user") or {}).get("shell") or "/bin/bash"
    prefix = "env " + "".join(shlex.quote(f"{k}={v}") + " " for k, v in env) if env else ""
    script = f"{_change_dir_command(cfg, workdir)} 2>/dev/null ; exec {prefix}{shell} -l"
    if command:
        script += " -c " + shlex.quote(command)
    return script


def quote_command(argv: list[str]) -> str:
    """An argument list as shell words, as Lima quotes it: leading `NAME=VALUE`
    arguments stay assignments (only the value is quoted), so `limactl shell NAME
    FOO='a b' printenv FOO` sets FOO for the command. (Lima takes any text before the
    `=` as the name; pylima quotes a word whose name is not a shell name whole.)"""
    import re

    words, assigning = [], True
    for arg in argv:
        name, eq, value = arg.partition("=")
        if assigning and eq and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            words.append(f"{name}={shlex.quote(value)}")
            continue
        assigning = False
        words.append(shlex.quote(arg))
    return " ".join(words)


def build_remote_script(cfg: dict[str, Any], argv: list[str], workdir: str | None,
                        shell: str | None, env: list[tuple[str, str]] | None = None) -> str:
    """`remote_script` for an argument list, as `limactl shell` runs it."""
    return remote_script(cfg, quote_command(argv) if argv else None, workdir, shell, env)


def scp_argv(config: Path, sources: list[str], target: str, recursive: bool) -> list[str]:
    """scp through the instance's ssh.config; guest paths are `lima-NAME:PATH`.
    Never the ssh master: see `ssh_argv`."""
    argv = ["scp", "-F", str(config), "-o", "ControlMaster=no", "-q"]
    if recursive:
        argv.append("-r")
    return [*argv, "--", *sources, target]
