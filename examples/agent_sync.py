"""An agent-style workflow on a copy of a project, with pylima's Python API.

    limactl start --name=sandbox --mount-none template:debian-12
    python examples/agent_sync.py sandbox ~/src/myproject

The project is copied into the VM (the instance has no mounts, so nothing else of
the host is reachable from there); an "agent" (here a shell script standing in for
one) edits the copy and runs the project's checks; the changes are reviewed, and
reach the project only if the checks passed and nothing was deleted. The same flow
on the command line is `limactl shell --sync DIR NAME COMMAND...`, which asks.
"""

from __future__ import annotations

import sys

import pylima

# What the agent does, in the guest, in its copy of the project.
AGENT = """
set -e
for f in $(find . -name '*.py' -not -path './.git/*'); do
  sed -i 's/[ \t]*$//' "$f"           # strip trailing blanks
done
if [ -x scripts/test ]; then scripts/test; fi
"""


def review(result: pylima.SyncResult) -> bool:
    print(f"exit status {result.returncode}; changes: {result.changes or 'none'}")
    print(result.changes.itemized, end="")
    return result.returncode == 0 and result.changes.deleted == 0


def main() -> int:
    name, project = sys.argv[1], sys.argv[2]
    inst = pylima.Instance.get(name)
    result = inst.sync(project, AGENT, accept=review, timeout=1800)
    print("copied back" if result.applied else "left the project as it was")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
