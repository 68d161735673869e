"""`limactl mcp`: Lima's tool table, the pure checks, and the server spoken to by the
MCP SDK's own stdio client (guest replaced by the local shell: see mcp_local_server)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from pylima.mcpserver import tools
from pylima.mcpserver.tools import ToolError

HERE = Path(__file__).parent
VENV_BIN = Path(sys.executable).parent


def test_tool_names_are_limas() -> None:
    assert sorted(tools.TOOL_NAMES) == ["glob", "list_directory", "read_file",
                                        "run_shell_command", "search_file_content",
                                        "write_file"]


def test_run_shell_command_schema_as_limas_bats_expects() -> None:
    spec = tools.tool("run_shell_command")
    assert spec is not None
    assert sorted(spec["inputSchema"]["required"]) == ["command", "directory"]
    assert sorted(spec["inputSchema"]["properties"]) == ["command", "description", "directory"]
    assert sorted(spec["outputSchema"]["required"]) == ["stderr", "stdout"]
    assert sorted(spec["outputSchema"]["properties"]) == ["error", "exit_code", "stderr",
                                                           "stdout"]


@pytest.mark.parametrize(("name", "args", "why"), [
    ("read_file", {"path": "/x"}, None),
    ("glob", {"pattern": "*", "path": None}, None),
    ("read_file", {}, "validating \"arguments\": missing properties: ['path']"),
    ("read_file", {"path": 3}, "validating \"arguments\": property 'path': want string"),
    ("read_file", {"path": "/x", "extra": 1},
     "validating \"arguments\": unexpected additional property 'extra'"),
    ("run_shell_command", {"command": "ls", "directory": "/"},
     "validating \"arguments\": property 'command': want array"),
    ("nope", {}, "unknown tool 'nope'"),
])
def test_check_arguments(name: str, args: dict[str, Any], why: str | None) -> None:
    assert tools.check_arguments(name, args) == why


def test_absolute_path() -> None:
    assert tools.absolute_path("/etc") == "/etc"
    with pytest.raises(ToolError, match="^expected an absolute path, got a relative path: "
                                        "`os-release`$"):
        tools.absolute_path("os-release")
    with pytest.raises(ToolError, match="^path is empty$"):
        tools.absolute_path("")


def test_go_shapes() -> None:
    assert tools.glob_pattern("/a/b", "*/*p.bats") == "/a/b/*/*p.bats"
    assert tools.glob_pattern("/a/b", "../c/*") == "/a/c/*"
    assert tools.go_file_mode(0o40755) == (1 << 31) | 0o755
    assert tools.go_file_mode(0o120777) == (1 << 27) | 0o777
    assert tools.go_file_mode(0o104755) == (1 << 23) | 0o755
    assert tools.shell_result("a", "", 0) == {"stdout": "a", "stderr": "", "exit_code": 0}
    assert tools.shell_result("", "NO\n", 13) == {"stdout": "", "stderr": "NO\n",
                                                  "error": "exit status 13", "exit_code": 13}
    t = tools.go_time(0)
    assert t[:4] in ("1970", "1969") and ("Z" in t or "+" in t or "-" in t[10:])


def _call(timeout: float, body: Any) -> Any:
    """Run `body(session)` against the local server, through the SDK's stdio client."""
    from mcp.client.session import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    params = StdioServerParameters(command=sys.executable,
                                   args=[str(HERE / "mcp_local_server.py"), str(timeout)],
                                   env={**os.environ, "PYTHONPATH": str(HERE)})

    async def main() -> Any:
        async with stdio_client(params) as (read, write), ClientSession(read, write) as s:
            init = await s.initialize()
            assert init.server_info.name == "lima"
            return await body(s)

    return anyio.run(main)


def test_sdk_client_lists_tools_and_calls_each(tmp_path: Path) -> None:
    d = tmp_path / "work dir"
    d.mkdir()
    (d / "a.txt").write_text("needle in a haystack\n💡\n")
    (d / ".hidden").write_text("x")

    async def body(s: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        out["tools"] = sorted(t.name for t in (await s.list_tools()).tools)
        out["write"] = await s.call_tool("write_file", {"path": f"{d}/sub/new.txt",
                                                        "content": "hé\n"})
        out["read"] = await s.call_tool("read_file", {"path": f"{d}/sub/new.txt"})
        out["missing"] = await s.call_tool("read_file", {"path": f"{d}/none"})
        out["relative"] = await s.call_tool("read_file", {"path": "a.txt"})
        out["list"] = await s.call_tool("list_directory", {"path": str(d)})
        out["glob"] = await s.call_tool("glob", {"pattern": "*", "path": str(d)})
        out["search"] = await s.call_tool("search_file_content",
                                          {"pattern": "💡", "path": str(d)})
        out["nomatch"] = await s.call_tool("search_file_content",
                                           {"pattern": "not there", "path": str(d)})
        out["run"] = await s.call_tool("run_shell_command", {
            "directory": str(d), "command": ["bash", "-c", "pwd; echo NO >&2; exit 13"]})
        out["nodir"] = await s.call_tool("run_shell_command", {
            "directory": f"{d}/etcetera", "command": ["true"]})
        return out

    r = _call(600, body)
    assert r["tools"] == sorted(tools.TOOL_NAMES)
    assert not r["write"].is_error and r["write"].content[0].text == "{}"
    assert (d / "sub" / "new.txt").read_text() == "hé\n"
    assert r["read"].structured_content == {"content": "hé\n"}
    assert json.loads(r["read"].content[0].text) == {"content": "hé\n"}
    assert r["missing"].is_error and r["missing"].content[0].text == "file does not exist"
    assert r["relative"].is_error
    assert "expected an absolute path" in r["relative"].content[0].text
    entries = {e["name"]: e for e in r["list"].structured_content["entries"]}
    assert sorted(entries) == [".hidden", "a.txt", "sub"]
    assert entries["sub"]["is_dir"] is True and entries["sub"]["mode"] & (1 << 31)
    assert entries["a.txt"]["size"] == len("needle in a haystack\n💡\n".encode())
    assert r["glob"].structured_content["matches"] == [f"{d}/.hidden", f"{d}/a.txt",
                                                       f"{d}/sub"]
    assert r["search"].structured_content["git_grep_output"] == "a.txt:2:💡\n"
    assert r["nomatch"].structured_content["git_grep_output"] == ""
    run = r["run"].structured_content
    assert run == {"stdout": f"{d}\n", "stderr": "NO\n", "error": "exit status 13",
                   "exit_code": 13}
    nodir = r["nodir"].structured_content
    assert nodir["exit_code"] == 1 and "No such file or directory" in nodir["stderr"]


def test_malformed_requests_are_protocol_errors() -> None:
    from mcp.shared.exceptions import MCPError

    async def body(s: Any) -> list[str]:
        errors = []
        for name, args in (("read_file", {}), ("nope", {"a": 1}),
                           ("run_shell_command", {"command": "ls", "directory": "/"})):
            with pytest.raises(MCPError) as e:
                await s.call_tool(name, args)
            assert e.value.code == -32602
            errors.append(e.value.message)
        # the server is still there
        errors.append(str(len((await s.list_tools()).tools)))
        return errors

    assert _call(600, body) == [
        "validating \"arguments\": missing properties: ['path']", "unknown tool 'nope'",
        "validating \"arguments\": property 'command': want array", "6"]


def test_shell_command_timeout() -> None:
    async def body(s: Any) -> Any:
        return await s.call_tool("run_shell_command",
                                 {"directory": "/", "command": ["sleep", "30"]})

    res = _call(1, body).structured_content
    assert res["exit_code"] == 124 and "timed out after 1s" in res["error"]


def test_wire_format_as_limas_bats_reads_it() -> None:
    """The raw JSON lines a client sees (Lima's bats suite reads them with yq): no
    `isError` on success, the error text as the content."""
    lines = [
        # only the protocol version, as Lima's bats suite sends it
        {"jsonrpc": "2.0", "id": 1, "method": "initialize",
         "params": {"protocolVersion": "2025-06-18"}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
         "params": {"name": "write_file", "arguments": {"path": "/tmp/pylima-mcp-wire",
                                                        "content": "x"}}},
        "not json{", {"a": 1},  # answered with JSON-RPC errors; the server carries on
        {"jsonrpc": "2.0", "id": 3, "method": "tools/list"},
    ]
    proc = subprocess.Popen([sys.executable, str(HERE / "mcp_local_server.py")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(HERE)})
    assert proc.stdin is not None and proc.stdout is not None
    replies = []
    for msg in lines:
        proc.stdin.write((msg if isinstance(msg, str) else json.dumps(msg)) + "\n")
        proc.stdin.flush()
        if isinstance(msg, str) or "id" in msg or "jsonrpc" not in msg:
            replies.append(json.loads(proc.stdout.readline()))
    proc.stdin.close()
    proc.wait(timeout=30)
    assert replies[0]["result"]["protocolVersion"] == "2025-06-18"
    assert replies[0]["result"]["serverInfo"]["name"] == "lima"
    assert replies[1]["result"] == {"content": [{"type": "text", "text": "{}"}],
                                    "structuredContent": {}}
    assert replies[2] == {"jsonrpc": "2.0", "id": None,
                          "error": {"code": -32700, "message": "Parse error"}}
    assert replies[3]["id"] is None and replies[3]["error"]["code"] == -32600
    assert len(replies[4]["result"]["tools"]) == 6


def test_info_prints_the_tools() -> None:
    r = subprocess.run([str(VENV_BIN / "limactl-mcp"), "info"], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    assert [t["name"] for t in json.loads(r.stdout)["tools"]] == tools.TOOL_NAMES
    r = subprocess.run([str(VENV_BIN / "limactl-mcp"), "-v"], capture_output=True, text=True)
    assert r.stdout == "limactl-mcp version 2.2.0\n"


def test_serve_refuses_a_missing_instance(tmp_path: Path) -> None:
    r = subprocess.run([str(VENV_BIN / "limactl"), "mcp", "serve", "nosuch"],
                       capture_output=True, text=True, env={**os.environ,
                                                            "LIMA_HOME": str(tmp_path)})
    assert r.returncode == 1 and "instance `nosuch` does not exist" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("argv", [["limactl", "--version"], ["limactl", "list", "--json"],
                                  ["lima", "--help"]])
def test_start_up_does_not_import_the_sdk(argv: list[str], tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-X", "importtime", "-c",
                        f"import sys; sys.argv = {argv!r}; "
                        f"from pylima.cli.{'entry' if argv[0] == 'limactl' else 'lima_cmd'} "
                        "import main; main(sys.argv[1:])"],
                       capture_output=True, text=True,
                       env={**os.environ, "LIMA_HOME": str(tmp_path)})
    imported = {line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines()
                if line.startswith("import time:")}
    assert imported, r.stderr
    assert not {m for m in imported if m.split(".")[0] in ("mcp", "mcp_types", "pydantic",
                                                           "anyio", "starlette")}


def test_generate_doc_writes_the_tools_page(tmp_path: Path) -> None:
    r = subprocess.run([str(VENV_BIN / "limactl-mcp"), "generate-doc", str(tmp_path / "d")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    page = (tmp_path / "d" / "mcp.md").read_text()
    assert all(f"## `{n}`" in page for n in tools.TOOL_NAMES)
