"""`lima [COMMAND...]`: `limactl shell $LIMA_INSTANCE COMMAND...` (default instance `default`)."""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing itself costs start-up time on this path

if TYPE_CHECKING:
    from typing import Any

def _usage(prog: str, limactl: str, name: str) -> str:
    return f"""Usage: {prog} [COMMAND...]

{prog} is an alias for "{limactl} shell {name}": it runs COMMAND in that instance, or
opens a login shell there. $LIMA_INSTANCE names the instance (default: "default").

$LIMA_SHELL and $LIMA_WORKDIR set the shell and the working directory in the guest
(`limactl shell --shell` and `--workdir`); by default the working directory follows
the host's when it is inside a mount. $LIMACTL names the limactl to run.

See `{limactl} shell --help` for further information.
"""


def main(argv: list[str] | None = None) -> Any:
    from pylima.errors import LimaError

    argv = sys.argv[1:] if argv is None else argv
    prog = os.path.basename(sys.argv[0]) or "lima"
    name = os.environ.get("LIMA_INSTANCE") or "default"
    limactl = os.environ.get("LIMACTL") or "limactl"
    if len(argv) == 1 and argv[0] in ("-h", "--help"):
        sys.stdout.write(_usage(prog, limactl, name))
        return sys.exit(0)
    shell, workdir = os.environ.get("LIMA_SHELL") or None, os.environ.get("LIMA_WORKDIR") or None
    # LIMA_WORKDIR and LIMA_SHELL as `limactl shell` flags, as Lima's wrapper passes them
    shell_flags = [*(["--workdir", workdir] if workdir else []),
                   *(["--shell", shell] if shell else [])]
    version = len(argv) == 1 and argv[0] in ("-v", "--version")
    if version and limactl == "limactl":
        from pylima.cli.entry import main as limactl_main

        return limactl_main(argv)
    if limactl != "limactl":
        # as Lima's wrapper: exec $LIMACTL (the version flags go to it alone)
        full = [limactl, *argv] if version else \
            [limactl, "shell", *shell_flags, "--instance", name, *argv]
        try:
            os.execvp(full[0], full)
        except OSError as e:
            sys.stderr.write(f"{prog}: {limactl}: {e.strerror}\n")
            return sys.exit(127)
    if argv[:1] == ["--"]:
        argv = argv[1:]  # `lima -- CMD`: Lima's wrapper passes it to `limactl shell NAME`
    elif argv and argv[0].startswith("-"):
        # flags before the command (`lima --workdir=/tmp pwd`, `lima --tty=false ls`):
        # Lima's wrapper hands them to `limactl shell --instance NAME`; so does this
        from pylima.cli.main import cli, run

        return sys.exit(run(cli, ["shell", *shell_flags, "--instance", name, *argv],
                            prog_name="limactl"))
    try:
        from pylima.cli.shellrun import run_shell

        return sys.exit(run_shell(name, argv, workdir=workdir, shell=shell))
    except LimaError as e:
        from pylima.cli.listing import _log

        _log().critical(e.message + (f" (Hint: {e.hint})" if e.hint else ""))
        return sys.exit(e.exit_code)
