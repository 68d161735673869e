"""The `limactl` entry point. `limactl --version` and the common `limactl list` forms
are answered without importing click (tools call them often, and start-up time is
most of their cost); everything else goes to the click application."""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing itself costs start-up time on this path

if TYPE_CHECKING:
    from typing import Any

def main(argv: list[str] | None = None) -> Any:
    if argv is None:
        argv = sys.argv[1:]
        # Lima's multi-call rule: the program's name, all extensions removed, is `yq`
        if sys.argv[0].rsplit("/", 1)[-1].split(".", 1)[0] == "yq":  # limactl linked as `yq`
            return sys.exit(_yq(argv))
    if argv[:1] == ["yq"]:
        return sys.exit(_yq(argv[1:]))
    if argv in (["--version"], ["-v"]):
        from pylima.version import LIMA_COMPAT_VERSION, __version__

        sys.stdout.write(f"limactl version {LIMA_COMPAT_VERSION}\npylima version {__version__}\n")
        return sys.exit(0)
    if argv and argv[0] in ("list", "ls"):
        from pylima.cli.listing import fast_list
        from pylima.errors import LimaError

        try:
            rc = fast_list(argv[1:])
        except LimaError as e:
            from pylima.cli.listing import _log

            _log().critical(e.message + (f" (Hint: {e.hint})" if e.hint else ""))
            return sys.exit(e.exit_code)
        except BrokenPipeError:
            return sys.exit(0)
        if rc is not None:
            sys.stdout.flush()
            return sys.exit(rc)
    import os

    if os.environ.get("_LIMACTL_COMPLETE", "").startswith("powershell"):
        import pylima.cli.completion  # noqa: F401 - registers pylima's PowerShell completion
    from pylima.cli.main import main as click_main

    return click_main(argv)


def _yq(argv: list[str]) -> int:
    from pylima.cli.yq_cmd import yq_main

    return yq_main(argv)
