"""`limactl mcp`: Lima's Model Context Protocol server (the `limactl-mcp` plugin).

`tools` holds the tool definitions (names, descriptions, JSON schemas) as data and
the pure parts (argument checks, Go-style results); `guest` acts in the instance
(one persistent helper process over SSH for the file tools, `limactl shell`'s script
for commands); `server` wires them to the official MCP SDK, which only the plugin
imports.
"""
