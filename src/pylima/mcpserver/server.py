"""The MCP server over stdio, on the official MCP Python SDK (imported here only)."""

from __future__ import annotations

import json
import os
from typing import Any

import anyio
import mcp_types as types
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import MCPError
from mcp.shared.message import SessionMessage

from pylima.mcpserver import tools
from pylima.mcpserver.guest import Guest
from pylima.mcpserver.tools import ToolError
from pylima.version import LIMA_COMPAT_VERSION


def tool_objects() -> list[types.Tool]:
    return [types.Tool(name=t["name"], description=t["description"],
                       input_schema=t["inputSchema"], output_schema=t["outputSchema"])
            for t in tools.TOOLS]


def _ok(res: dict[str, Any]) -> types.CallToolResult:
    text = json.dumps(res, ensure_ascii=False, separators=(",", ":"))
    out = types.CallToolResult(content=[types.TextContent(type="text", text=text)],
                               structured_content=res)
    # Lima's (Go SDK's) results leave `isError` out unless it is true; clients (Lima's
    # own test suite among them) read a missing field, not `false`
    out.is_error = None  # type: ignore[assignment]
    return out


def _failed(message: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=message)],
                                is_error=True)


def dispatch(guest: Guest, name: str, args: dict[str, Any]) -> dict[str, Any]:
    """Run tool `name` (arguments already checked) in the guest; ToolError on failure."""
    if name == "list_directory":
        raw = guest.call("list", path=tools.absolute_path(args["path"]))
        return {"entries": tools.directory_entries(raw["entries"])}
    if name == "read_file":
        return dict(guest.call("read", path=tools.absolute_path(args["path"])))
    if name == "write_file":
        guest.call("write", path=tools.absolute_path(args["path"]), content=args["content"])
        return {}
    if name == "glob":
        base = tools.absolute_path(args.get("path") or os.getcwd())
        return dict(guest.call("glob", pattern=tools.glob_pattern(base, args["pattern"])))
    if name == "search_file_content":
        directory = args.get("path") or os.getcwd()
        target = tools.absolute_path(directory)
        out, err, code = guest.search(args["pattern"], directory, target,
                                      args.get("include") or None)
        if code not in (0, 1):  # 1: nothing found
            raise ToolError(err.strip() or f"exit status {code}")
        return {"git_grep_output": out}
    if name == "run_shell_command":
        directory = tools.absolute_path(args["directory"])
        out, err, code, error = guest.run(list(args["command"]), directory)
        return tools.shell_result(out, err, code, error)
    raise ToolError(f"unknown tool {name!r}")  # pragma: no cover - checked before


def build_server(guest: Guest | None) -> Server[Any]:
    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(tools=tool_objects())

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        why = tools.check_arguments(params.name, params.arguments)
        if why is not None:  # a malformed request: a protocol error, as Lima's SDK
            raise MCPError(types.INVALID_PARAMS, why)
        if guest is None:
            return _failed("instance not registered")
        try:
            res = await anyio.to_thread.run_sync(dispatch, guest, params.name,
                                                 dict(params.arguments or {}))
        except ToolError as e:
            return _failed(str(e))
        return _ok(res)

    return Server(tools.SERVER_NAME, version=LIMA_COMPAT_VERSION, title=tools.SERVER_TITLE,
                  instructions=tools.INSTRUCTIONS, on_list_tools=list_tools,
                  on_call_tool=call_tool)


def lenient_initialize(message: Any) -> None:
    """Let an `initialize` request leave out `capabilities` and `clientInfo`, as Lima's
    (Go) server does: the Python SDK would refuse it as invalid parameters, and clients
    that send only `protocolVersion` exist (Lima's own test suite is one)."""
    params = getattr(message, "params", None)
    if getattr(message, "method", None) == "initialize" and isinstance(params, dict):
        params.setdefault("capabilities", {})
        params.setdefault("clientInfo", {"name": "", "version": ""})


async def serve_streams(server: Server[Any], read: Any, write: Any) -> None:
    """`server` on a transport's streams, each incoming message seen by
    lenient_initialize first. A line that is not JSON-RPC is answered with JSON-RPC's
    error (-32700 for text that is not JSON, -32600 for JSON that is no message),
    where the SDK would drop it silently; the server carries on."""
    send, recv = anyio.create_memory_object_stream[SessionMessage | Exception](0)

    async def forward() -> None:
        async with send:
            async for msg in read:
                if isinstance(msg, SessionMessage):
                    lenient_initialize(msg.message)
                    await send.send(msg)
                    continue
                await write.send(SessionMessage(types.JSONRPCError(
                    jsonrpc="2.0", id=None, error=_unreadable(msg))))

    async with anyio.create_task_group() as tg:
        tg.start_soon(forward)
        await server.run(recv, write, server.create_initialization_options())
        tg.cancel_scope.cancel()


def _unreadable(exc: Exception) -> types.ErrorData:
    errors = exc.errors() if hasattr(exc, "errors") else []
    if any(e.get("type") == "json_invalid" for e in errors):
        return types.ErrorData(code=types.PARSE_ERROR, message="Parse error")
    return types.ErrorData(code=types.INVALID_REQUEST, message="Invalid Request")


def serve(guest: Guest) -> None:
    server = build_server(guest)

    async def main() -> None:
        async with stdio_server() as (read, write):
            await serve_streams(server, read, write)

    try:
        anyio.run(main)
    finally:
        guest.close()
