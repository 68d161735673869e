"""Acting in the instance for the MCP tools.

File tools go through one helper process in the guest, started over SSH (through the
host agent's master connection when there is one) and kept for the server's life: a
stdlib-only Python program reading one JSON request a line and answering one JSON
line, so that each call costs a round trip, not an SSH login and a Python start-up
(about a second under emulation). It runs as the guest user: what the user cannot
read or write, neither can the agent. Commands run as `limactl shell --workdir` runs
them, under the guest's `timeout`.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import threading
from pathlib import Path
from typing import Any

from pylima.mcpserver.tools import READ_LIMIT, ToolError

# The helper, run as `python3 -c HELPER`. Error texts are Go's for the common cases
# (what Lima's SFTP client reports), the errno's text otherwise.
HELPER = r"""
import errno, glob, json, os, sys
def text(e):
    n = getattr(e, "errno", None)
    if n == errno.ENOENT: return "file does not exist"
    if n in (errno.EACCES, errno.EPERM): return "permission denied"
    if n == errno.EEXIST: return "file already exists"
    if isinstance(e, OSError) and e.strerror: return e.strerror[:1].lower() + e.strerror[1:]
    return str(e)
def op_list(r):
    out = []
    for name in sorted(os.listdir(r["path"])):
        st = os.lstat(os.path.join(r["path"], name))
        out.append({"name": name, "size": st.st_size, "mode": st.st_mode,
                    "mtime": int(st.st_mtime)})
    return {"entries": out}
def op_read(r):
    with open(r["path"], "rb") as f:
        data = f.read(LIMIT)
    return {"content": data.decode("utf-8", "replace")}
def op_write(r):
    parent = os.path.dirname(r["path"])
    if parent:
        os.makedirs(parent, exist_ok=True)
    with open(r["path"], "wb") as f:
        f.write(r["content"].encode("utf-8", "surrogatepass"))
    return {}
def op_glob(r):
    try:
        found = glob.glob(r["pattern"], include_hidden=True)
    except TypeError:
        found = glob.glob(r["pattern"])
    return {"matches": sorted(found)}
OPS = {"list": op_list, "read": op_read, "write": op_write, "glob": op_glob}
out = sys.stdout
sys.stdout = sys.stderr
for line in sys.stdin:
    try:
        req = json.loads(line)
        res = {"ok": OPS[req["op"]](req)}
    except Exception as e:
        res = {"error": text(e)}
    out.write(json.dumps(res) + "\n")
    out.flush()
""".replace("LIMIT", str(READ_LIMIT))

# search_file_content: `git grep -n --no-index` as Lima runs it; where the guest has no
# git, grep with the same output form (paths relative to the directory).
SEARCH_SCRIPT = r"""
pat=$1 target=$2 include=$3
# relative to the working directory, as git prints it (and Debian 12's git aborts on
# an absolute path outside a repository)
rel=$(realpath -m --relative-to=. -- "$target" 2>/dev/null) || rel=$target
if command -v git >/dev/null 2>&1; then
  if [ -n "$include" ]; then rel=$rel/$include; fi
  exec git grep -n --no-index -e "$pat" -- "$rel"
fi
if [ -n "$include" ]; then
  grep -rnI --include="${include##*/}" -e "$pat" -- "$rel"
else
  grep -rnI -e "$pat" -- "$rel"
fi | sed 's|^\./||'
exit "${PIPESTATUS[0]}"
"""


class Guest:
    """One instance's side of the tools."""

    def __init__(self, inst_dir: Path, name: str, config: dict[str, Any],
                 timeout: float) -> None:
        self.inst_dir, self.name, self.config, self.timeout = inst_dir, name, config, timeout
        self._helper: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def remote(self, script: str) -> list[str]:
        """The argv that runs shell `script` in the guest, as the guest user."""
        from pylima.sshutil import ssh_argv

        return [*ssh_argv(self.inst_dir, self.name, "-q"), "--", script]

    def _start_helper(self) -> subprocess.Popen[bytes]:
        argv = self.remote("exec python3 -u -c " + shlex.quote(HELPER))
        return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL)

    def call(self, op: str, **args: Any) -> Any:
        """One request to the helper (started, or restarted after it died, on demand);
        its error text becomes a ToolError."""
        with self._lock:
            for attempt in (1, 2):
                if self._helper is None or self._helper.poll() is not None:
                    self._helper = self._start_helper()
                proc = self._helper
                assert proc.stdin is not None and proc.stdout is not None
                try:
                    proc.stdin.write(json.dumps({"op": op, **args}).encode() + b"\n")
                    proc.stdin.flush()
                    line = proc.stdout.readline()
                except OSError:
                    line = b""
                if line:
                    break
                proc.kill()
                proc.wait()
                self._helper = None
                if attempt == 2:
                    raise ToolError(f"cannot reach instance `{self.name}` (is python3 "
                                    "installed in the guest?)")
        res = json.loads(line)
        if "error" in res:
            raise ToolError(res["error"])
        return res["ok"]

    def run(self, command: list[str], directory: str) -> tuple[str, str, int | None, str | None]:
        """`command` in `directory` as `limactl shell --workdir=DIRECTORY NAME COMMAND...`
        runs it, ended by the guest's `timeout` (and a host-side backstop) after
        self.timeout seconds: stdout, stderr, exit code, error text (None for Go's
        default)."""
        from pylima.sshutil import build_remote_script, quote_command

        limit = max(1, int(self.timeout))
        # `env` keeps leading NAME=VALUE words assignments after `timeout`
        words = ["timeout", "-k", "5", str(limit), "env", "--", *command]
        script = build_remote_script(self.config, [], directory, None)
        script += " -c " + shlex.quote(quote_command(words))
        argv = self.remote(script)
        try:
            r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                               timeout=limit + 30)
        except subprocess.TimeoutExpired as e:
            return (_text(e.stdout), _text(e.stderr), -1,
                    f"command timed out after {limit}s")
        out, err = _text(r.stdout), _text(r.stderr)
        if r.returncode == 124:
            return out, err, 124, f"exit status 124 (command timed out after {limit}s)"
        return out, err, r.returncode, None

    def search(self, pattern: str, directory: str, target: str,
               include: str | None) -> tuple[str, str, int | None]:
        cmd = ["bash", "-c", SEARCH_SCRIPT, "search", pattern, target, include or ""]
        out, err, code, _ = self.run(cmd, directory)
        return out, err, code

    def close(self) -> None:
        if self._helper is not None and self._helper.poll() is None:
            assert self._helper.stdin is not None
            self._helper.stdin.close()
            try:
                self._helper.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._helper.kill()
                self._helper.wait()


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data if isinstance(data, str) else data.decode("utf-8", "replace")
