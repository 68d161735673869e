"""The tools of Lima's MCP server ("MCP Sandbox Interface"): names, descriptions and
input/output schemas as Lima v2.2.0 declares them, and the pure checks around them.
No SDK here: `limactl mcp info` and the unit tests read these tables directly."""

from __future__ import annotations

import datetime as _dt
import posixpath
from typing import Any

INSTRUCTIONS = (
    "This MCP server provides tools for sandboxing local command executions and file I/O "
    "operations,\nby wrapping them in Lima VM (https://lima-vm.io).\n\n"
    "Use these tools to avoid accidentally executing malicious codes directly on the host.\n")
SERVER_NAME = "lima"
SERVER_TITLE = "Lima VM, for sandboxing local command executions and file I/O operations"

# Lima's limit on read_file (32 MiB), the rest is cut off.
READ_LIMIT = 32 * 1024 * 1024


def _str(desc: str) -> dict[str, Any]:
    return {"type": "string", "description": desc}


def _opt(kind: str, desc: str) -> dict[str, Any]:
    """An optional (pointer) field: null or the type, as Go's schema inference has it."""
    return {"type": ["null", kind], "description": desc}


def _obj(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object"}
    if required:
        out["required"] = required
    out["properties"] = properties
    out["additionalProperties"] = False
    return out


_ENTRY = _obj({
    "name": _str("base name of the file"),
    "size": _opt("integer", "length in bytes for regular files; system-dependent for others"),
    "mode": _opt("integer", "file mode bits"),
    "time": _opt("string", "modification time"),
    "is_dir": _opt("boolean", "true for a directory"),
}, ["name"])

TOOLS: list[dict[str, Any]] = [
    {
        "name": "list_directory",
        "description": "Lists the names of files and subdirectories directly within a "
                       "specified directory path.",
        "inputSchema": _obj({"path": _str("The absolute path to the directory to list.")},
                            ["path"]),
        "outputSchema": _obj({"entries": {"type": "array", "description":
                                          "The directory content entries.",
                                          "items": _ENTRY}}, ["entries"]),
    },
    {
        "name": "read_file",
        "description": "Reads and returns the content of a specified file.",
        "inputSchema": _obj({"path": _str("The absolute path to the file to read.")},
                            ["path"]),
        "outputSchema": _obj({"content": _str("The content of the file.")}, ["content"]),
    },
    {
        "name": "write_file",
        "description": "Writes content to a specified file. If the file exists, it will be "
                       "overwritten. If the file doesn't exist, it (and any necessary parent "
                       "directories) will be created.",
        "inputSchema": _obj({"path": _str("The absolute path to the file to write to."),
                             "content": _str("The content to write into the file.")},
                            ["path", "content"]),
        "outputSchema": _obj({}, []),
    },
    {
        "name": "glob",
        "description": "Finds files matching specific glob patterns (e.g., src/**/*.ts, *.md)",
        "inputSchema": _obj({
            "pattern": _str("The glob pattern to match against (e.g., '*.py', 'src/**/*.js')."),
            "path": _opt("string", "The absolute path to the directory to search within. If "
                                   "omitted, searches the tool's root directory."),
        }, ["pattern"]),
        "outputSchema": _obj({"matches": {
            "type": "array", "description": "A list of absolute file paths that match the "
                                            "provided glob pattern.",
            "items": {"type": "string"}}}, ["matches"]),
    },
    {
        "name": "search_file_content",
        "description": "Searches for a regular expression pattern within the content of files "
                       "in a specified directory. Internally calls 'git grep -n --no-index'.",
        "inputSchema": _obj({
            "pattern": _str("The regular expression (regex) to search for (e.g., "
                            "'function\\s+myFunction')."),
            "path": _opt("string", "The absolute path to the directory to search within. "
                                   "Defaults to the current working directory."),
            "include": _opt("string", "A glob pattern to filter which files are searched "
                                      "(e.g., '*.js', 'src/**/*.{ts,tsx}'). If omitted, searches "
                                      "most files (respecting common ignores)."),
        }, ["pattern"]),
        "outputSchema": _obj({"git_grep_output": _str(
            "The raw output from the 'git grep -n --no-index' command, containing matching "
            "lines with filenames and line numbers.")}, ["git_grep_output"]),
    },
    {
        "name": "run_shell_command",
        "description": "Executes a given shell command.",
        "inputSchema": _obj({
            "command": {"type": "array", "description":
                        "The exact shell command to execute. Defined as a string slice, "
                        "unlike Gemini's run_shell_command that defines it as a single string.",
                        "items": {"type": "string"}},
            "description": _str("A brief description of the command's purpose, which will be "
                                "potentially shown to the user."),
            "directory": _str("The absolute directory in which to execute the command. Unlike "
                              "Gemini's run_shell_command, this must not be a relative path, "
                              "and must not be empty."),
        }, ["command", "directory"]),
        "outputSchema": _obj({
            "stdout": _str("Output from the standard output stream."),
            "stderr": _str("Output from the standard error stream."),
            "error": _str("Any error message reported by the subprocess."),
            "exit_code": _opt("integer", "Exit code of the command."),
        }, ["stdout", "stderr"]),
    },
]

TOOL_NAMES = [t["name"] for t in TOOLS]


class ToolError(Exception):
    """A tool's failure: the result the agent sees (`isError`), not a protocol error."""


def tool(name: str) -> dict[str, Any] | None:
    return next((t for t in TOOLS if t["name"] == name), None)


def check_arguments(name: str, args: Any) -> str | None:
    """Why `args` do not fit tool `name`'s input schema (the protocol error's text), or
    None. The schemas are flat, so a small checker does: strings, string arrays,
    required and unknown fields."""
    spec = tool(name)
    if spec is None:
        return f"unknown tool {name!r}"
    if args is None:
        args = {}
    if not isinstance(args, dict):
        return "validating \"arguments\": arguments must be an object"
    schema = spec["inputSchema"]
    for req in schema.get("required", []):
        if req not in args:
            return f"validating \"arguments\": missing properties: [{req!r}]"
    for key, value in args.items():
        prop = schema["properties"].get(key)
        if prop is None:
            return f"validating \"arguments\": unexpected additional property {key!r}"
        kinds = prop["type"] if isinstance(prop["type"], list) else [prop["type"]]
        if value is None and "null" in kinds:
            continue
        if "string" in kinds and isinstance(value, str):
            continue
        if "array" in kinds and isinstance(value, list) and all(
                isinstance(v, str) for v in value):
            continue
        want = " or ".join(k for k in kinds if k != "null")
        return f"validating \"arguments\": property {key!r}: want {want}"
    return None


def absolute_path(path: str) -> str:
    """Lima's check of a path the agent names: absolute, not empty. The path is the
    same in the guest (Lima's mounts keep host paths)."""
    if path == "":
        raise ToolError("path is empty")
    if not path.startswith("/"):
        raise ToolError(f"expected an absolute path, got a relative path: `{path}`")
    return path


def glob_pattern(base: str, pattern: str) -> str:
    """Go's path.Join(base, pattern): joined and cleaned."""
    joined = posixpath.normpath(posixpath.join(base, pattern)) if pattern else \
        posixpath.normpath(base)
    return "/" + joined.lstrip("/") if joined.startswith("//") else joined


# Go's fs.FileMode type bits (the `mode` of list_directory entries is Go's number).
_GO_DIR, _GO_SYMLINK, _GO_DEVICE, _GO_PIPE, _GO_SOCKET = 1 << 31, 1 << 27, 1 << 26, 1 << 25, \
    1 << 24
_GO_SETUID, _GO_SETGID, _GO_CHARDEV, _GO_STICKY = 1 << 23, 1 << 22, 1 << 21, 1 << 20


def go_file_mode(st_mode: int) -> int:
    """A POSIX st_mode as Go's fs.FileMode."""
    import stat

    mode = st_mode & 0o777
    kind = stat.S_IFMT(st_mode)
    mode |= {stat.S_IFDIR: _GO_DIR, stat.S_IFLNK: _GO_SYMLINK, stat.S_IFIFO: _GO_PIPE,
             stat.S_IFSOCK: _GO_SOCKET, stat.S_IFBLK: _GO_DEVICE,
             stat.S_IFCHR: _GO_DEVICE | _GO_CHARDEV}.get(kind, 0)
    if st_mode & stat.S_ISUID:
        mode |= _GO_SETUID
    if st_mode & stat.S_ISGID:
        mode |= _GO_SETGID
    if st_mode & stat.S_ISVTX:
        mode |= _GO_STICKY
    return mode


def go_time(seconds: float) -> str:
    """A modification time as Go's time.Time marshals it (RFC 3339, local zone, `Z` for
    a zero offset); SFTP-style whole seconds."""
    t = _dt.datetime.fromtimestamp(int(seconds)).astimezone()
    return t.isoformat().replace("+00:00", "Z")


def directory_entries(raw: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The guest helper's lstat facts as list_directory's entries."""
    return [{"name": e["name"], "size": e["size"], "mode": go_file_mode(e["mode"]),
             "time": go_time(e["mtime"]), "is_dir": (e["mode"] & 0o170000) == 0o040000}
            for e in raw]


def shell_result(stdout: str, stderr: str, exit_code: int | None,
                 error: str | None = None) -> dict[str, Any]:
    """run_shell_command's result as Lima's: `error` is Go's exec error text."""
    res: dict[str, Any] = {"stdout": stdout, "stderr": stderr}
    if exit_code == 0 and not error:
        res["exit_code"] = 0
        return res
    if error is None:
        error = f"exit status {exit_code}" if exit_code is not None and exit_code >= 0 \
            else f"signal: {-(exit_code or 0)}"
    res["error"] = error
    if exit_code is not None:
        res["exit_code"] = exit_code
    return res
