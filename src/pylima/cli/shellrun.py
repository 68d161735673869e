"""Running a command or a login shell in a guest over SSH: the work behind
`limactl shell` and `lima`. Free of click and logging: `lima CMD` is latency-sensitive."""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing itself costs start-up time on this path

if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any


def run_shell(name: str, argv: list[str], *, workdir: str | None = None,
              shell: str | None = None, start: bool = False, preserve_env: bool = False,
              reconnect: bool = False, sync: str | None = None,
              tty: bool | None = None) -> int:
    from pylima.errors import InstanceError, InstanceNotFound, LimaError
    from pylima.sshutil import (
        X11_WITHOUT_DISPLAY,
        build_remote_script,
        master_socket,
        ssh_argv,
        x11_without_display,
    )
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
    if sync:
        return _run_synced(inst.dir, name, inst.config, argv, sync, workdir=workdir,
                           shell=shell, env=env, tty=tty)
    script = build_remote_script(inst.config, argv, workdir, shell, env)
    # a terminal on stdin gets a pty in the guest; pipes stay byte-exact
    # COLORTERM reaches the guest as in Lima (its boot step makes sshd accept it)
    colorterm = ("-o", "SendEnv=COLORTERM") if "COLORTERM" in os.environ else ()
    full = ssh_argv(inst.dir, name, "-q", *colorterm, tty=sys.stdin.isatty(),
                    user_session=True)
    # through the host agent's master, X11 goes to the display of `limactl start`
    if x11_without_display(inst.config.get("ssh")) and not master_socket(inst.dir).exists():
        from pylima.cli.listing import _log

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


def _run_synced(inst_dir: Path, name: str, cfg: dict[str, Any], argv: list[str], sync: str,
                *, workdir: str | None, shell: str | None, env: list[tuple[str, str]] | None,
                tty: bool | None) -> int:
    """--sync DIR: DIR copied into the guest, the command run in the copy, and the
    copy's changes brought back as Lima does (at once with --tty=false or --yes,
    else listed and only when accepted)."""
    import signal
    import subprocess

    from pylima.cli.listing import _log
    from pylima.sshutil import build_remote_script, ssh_argv
    from pylima.sync import Syncer, check_sync_dir, guest_dir

    log = _log()
    host_dir = check_sync_dir(sync, mounts=cfg.get("mounts"), workdir=workdir)
    dest = guest_dir(cfg, host_dir)
    syncer = Syncer(ssh_argv(inst_dir, name, "-q"), host_dir, dest)
    log.info("Syncing host current directory(%s) to guest instance...", host_dir)
    syncer.copy_in()
    log.info("Successfully synced host current directory to guest(%s) instance.", dest)
    script = build_remote_script(cfg, argv, dest, shell, env)
    full = [*ssh_argv(inst_dir, name, "-q", tty=sys.stdin.isatty()), "--", script]
    sys.stdout.flush()
    sys.stderr.flush()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # ^C is the guest command's
    try:
        rc = subprocess.call(full, preexec_fn=lambda: signal.signal(signal.SIGINT,
                                                                    signal.SIG_DFL))
    finally:
        signal.signal(signal.SIGINT, previous)
    if rc != 0:
        log.warning("The command exited with status %d: the changes are not synced back "
                    "(the guest copy stays at %s)", rc, dest)
        return rc
    try:
        return _sync_back(syncer, sys.stdout.isatty() if tty is None else tty)
    finally:
        syncer.close()


def _sync_back(syncer: Any, tty: bool) -> int:
    from pylima.cli.listing import _log
    from pylima.cli.prompt import PromptError, select
    from pylima.errors import LimaError

    log = _log()
    cleanup = False
    try:
        if not tty:
            syncer.apply()
            log.info("Successfully synced back the changes to host.")
            cleanup = True
            return 0
        changes = syncer.changes()
        if changes.empty:
            log.info("No changes detected")
            cleanup = True
            return 0
        message = f"\u26a0\ufe0f Accept the changes? ({changes})"
        while True:
            try:
                answer = select(message, ["Yes", "No", "View the changed contents"])
            except PromptError as e:
                raise LimaError(f"failed to open TUI: {e}; preserving guest synced workdir "
                                f"at {syncer.guest}") from None
            if answer == 0:
                syncer.apply()
                log.info("Successfully synced back the changes to host.")
                cleanup = True
                return 0
            if answer == 1:
                log.info("Skipping syncing back the changes to host.")
                cleanup = True
                return 0
            _view_changes(syncer, changes)
    finally:
        if cleanup and not syncer.remove_guest_copy():
            log.warning("Failed to clean up guest synced workdir")


def _view_changes(syncer: Any, changes: Any) -> None:
    """The itemized list and a colour diff of the host directory against the guest's
    copy, in $PAGER (less -R by default), as Lima shows them."""
    import shlex
    import shutil
    import subprocess

    gray, none = "\033[0;90m", "\033[0m"
    tmp = syncer.fetch()
    pager = shlex.split(os.environ.get("PAGER", "").strip()) or ["less", "-R"]
    if os.path.basename(pager[0]) == "less" and not any(
            a in ("-R", "-r") or (a.startswith("-") and not a.startswith("--") and
                                  ("R" in a or "r" in a)) for a in pager[1:]):
        pager.append("-R")
    have_diff = shutil.which("diff") is not None
    head = (f"{gray}--- rsync dry-run statistics ---{none}\n{changes}\n\n"
            f"{changes.itemized}\n\n\n"
            + (f"{gray}--- detailed diff --- {none}\n" if have_diff else
               f"{gray}--- detailed diff unavailable (`diff` not found) --- {none}\n"))
    try:
        less = subprocess.Popen(pager, stdin=subprocess.PIPE)
    except OSError:
        less = subprocess.Popen(["cat"], stdin=subprocess.PIPE)
    assert less.stdin is not None
    try:
        less.stdin.write(head.encode())
        less.stdin.flush()
        if have_diff:
            subprocess.run(["diff", "-ruN", "--color=always", syncer.host_dir, tmp],
                           stdout=less.stdin)
    except BrokenPipeError:
        pass
    finally:
        try:
            less.stdin.close()
        except BrokenPipeError:
            pass
        less.wait()
