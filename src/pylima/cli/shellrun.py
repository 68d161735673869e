"""Running a command or a login shell in a guest over SSH: the work behind
`limactl shell` and `lima`. Free of click and logging: `lima CMD` is latency-sensitive."""

from __future__ import annotations

import os
import sys


def run_shell(name: str, argv: list[str], *, workdir: str | None = None,
              shell: str | None = None, start: bool = False) -> int:
    from pylima.errors import InstanceError, InstanceNotFound
    from pylima.sshutil import build_remote_script, ssh_argv
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
