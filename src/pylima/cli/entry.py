"""The `limactl` entry point. `limactl --version` and the common `limactl list` forms
are answered without importing click (tools call them often, and start-up time is
most of their cost); everything else goes to the click application."""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing itself costs start-up time on this path

if TYPE_CHECKING:
    from typing import Any

def main(argv: list[str] | None = None) -> Any:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--version"]:
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
    from pylima.cli.main import main as click_main

    return click_main(argv)
