"""The MCP server with the guest replaced by this host's shell (`bash -c` instead of ssh):
the protocol and the tools' code paths, for the unit tests. The VM tests run the
real one against a booted guest."""

from __future__ import annotations

import sys
from pathlib import Path

from pylima.mcpserver.guest import Guest
from pylima.mcpserver.server import serve


class LocalGuest(Guest):
    def remote(self, script: str) -> list[str]:
        return ["bash", "-c", script]


def local_guest(timeout: float = 600) -> LocalGuest:
    return LocalGuest(Path("/nonexistent"), "local", {"user": {"shell": "/bin/bash"}},
                      timeout)


if __name__ == "__main__":
    serve(local_guest(float(sys.argv[1]) if len(sys.argv) > 1 else 600))
