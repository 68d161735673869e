"""Running a command or a login shell in a guest over SSH: the work behind
`limactl shell` and `lima`. Free of click and logging: `lima CMD` is latency-sensitive."""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing itself costs start-up time on this path

if TYPE_CHECKING:
    from pathlib import Path


def run_shell(name: str, argv: list[str], *, workdir: str | None = None,
              shell: str | None = None, start: bool = False, preserve_env: bool = False,
              reconnect: bool = False) -> int:
    from pylima.errors import InstanceError, InstanceNotFound, LimaError
    from pylima.sshutil import build_remote_script, ssh_argv
    from pylima.store.instance import STATUS_RUNNING, inspect

    env = None
    if preserve_env:
        from pylima.shellenv import PatternError, preserved

        try:
            env = preserved(os.environ)
        except PatternError as e:
            raise LimaError(str(e)) from None
    if argv[:1] and argv[0] in ("create", "start", "delete", "shell"):
        from pylima.cli.listing import _log

        _log().warning("Perhaps you meant `limactl %s`?", " ".join(argv))

    try:
        inst = inspect(name)
    except InstanceNotFound as e:
        raise InstanceNotFound(f"instance `{name}` does not exist, run `limactl create {name}` "
                               "to create a new instance") from e
    if inst.config is None:
        raise InstanceError(f"instance `{name}` has configuration errors: "
                            f"{'; '.join(inst.errors)}")
    if inst.status != STATUS_RUNNING:
        if not start:
            raise InstanceError(f"instance `{name}` is stopped, run `limactl start {name}` to "
                                "start the instance")
        from pylima.cli.start import start_instance_cli

        start_instance_cli(inst, 600, False, False)
        inst = inspect(name)
    assert inst.config is not None
    if reconnect:
        _exit_master(inst.dir, name)
    script = build_remote_script(inst.config, argv, workdir, shell, env)
    # a terminal on stdin gets a pty in the guest; pipes stay byte-exact
    full = ssh_argv(inst.dir, name, "-q", tty=sys.stdin.isatty(), user_session=True)
    ssh_cfg = inst.config.get("ssh") or {}
    if (ssh_cfg.get("forwardX11") or ssh_cfg.get("forwardX11Trusted")) \
            and not os.environ.get("DISPLAY"):
        from pylima.cli.listing import _log
        from pylima.sshutil import X11_WITHOUT_DISPLAY

        _log().warning("%s", X11_WITHOUT_DISPLAY)
    full.append("--")
    full.append(script)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvp(full[0], full)
    return 255  # pragma: no cover


def _exit_master(inst_dir: Path, name: str) -> None:
    """--reconnect: end the SSH master connection, so that this and later sessions log
    in anew (new group memberships, a changed login shell). The host agent opens a new
    master and its SSH forwards again; this session connects directly meanwhile."""
    import socket
    import subprocess

    from pylima.cli.listing import _log
    from pylima.store import dirs

    sock = inst_dir / dirs.SSH_SOCK
    if not sock.exists():
        return
    _log().info("Exiting ssh session for the instance `%s`", name)
    r = subprocess.run(["ssh", "-F", str(inst_dir / dirs.SSH_CONFIG), "-O", "exit",
                        f"lima-{name}"], capture_output=True, text=True)
    if r.returncode == 0:
        return
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(str(sock))
            alive = True
        except OSError:
            alive = False
    if alive:
        from pylima.errors import LimaError

        raise LimaError(f"failed to exit the ssh master of instance `{name}`: "
                        f"{r.stderr.strip()}")
    sock.unlink(missing_ok=True)
    _log().warning("Removed stale ssh control socket for the instance `%s` after the master "
                   "had already exited", name)
