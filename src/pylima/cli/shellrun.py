"""Running a command or a login shell in a guest over SSH: the work behind
`limactl shell` and `lima`. Free of click and logging: `lima CMD` is latency-sensitive."""

from __future__ import annotations

import os
import shlex
import sys

TYPE_CHECKING = False  # typing itself costs start-up time on this path

if TYPE_CHECKING:
    from typing import Any


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


def build_remote_script(cfg: dict[str, Any], argv: list[str], workdir: str | None,
                        shell: str | None) -> str:
    shell = shell or (cfg.get("user") or {}).get("shell") or "/bin/bash"
    script = f"{_change_dir_command(cfg, workdir)} 2>/dev/null ; exec {shell} -l"
    if argv:
        script += " -c " + shlex.quote(" ".join(shlex.quote(a) for a in argv))
    return script


def run_shell(name: str, argv: list[str], *, workdir: str | None = None,
              shell: str | None = None, start: bool = False) -> int:
    from pylima.errors import InstanceError, InstanceNotFound
    from pylima.sshutil import ssh_argv
    from pylima.store.instance import STATUS_RUNNING, inspect

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
    script = build_remote_script(inst.config, argv, workdir, shell)
    # a terminal on stdin gets a pty in the guest; pipes stay byte-exact
    full = ssh_argv(inst.dir, name, "-q", tty=sys.stdin.isatty())
    full.append("--")
    full.append(script)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvp(full[0], full)
    return 255  # pragma: no cover
