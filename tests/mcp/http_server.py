"""An MCP server over streamable HTTP written with the official Python SDK,
for tests/mcp_faults.rs: `echo` answers its text, `huge` answers a text of
`n` bytes (for the client's size cap). Listens on 127.0.0.1 on a port the
system picks, and prints `PORT <n>` once it accepts connections."""

import socket
import sys

import anyio
import uvicorn

from mcp.server.mcpserver import MCPServer

server = MCPServer("http-test")


@server.tool()
def echo(text: str) -> str:
    """Answers its text."""
    return text


@server.tool()
def huge(n: int) -> str:
    """Answers a text of n bytes."""
    return "x" * n


async def main():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    app = server.streamable_http_app()
    config = uvicorn.Config(app, log_level="warning")
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    await uvicorn.Server(config).serve(sockets=[sock])


anyio.run(main)
