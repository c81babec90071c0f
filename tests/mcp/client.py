"""Drives `swarm mcp` (stdio) or `swarm serve`'s `/mcp` (HTTP) with the
official Python MCP SDK's client, for tests/mcp_server.rs.

  client.py stdio SWARM_BIN DIR STORE CALLS_JSON
  client.py http URL TOKEN CALLS_JSON        (TOKEN "-": none)

CALLS_JSON is a list of [tool, arguments]. Prints one JSON document:
{"tools": [names], "calls": [{"error": bool, "structured": ..., "text": ...}]}
or {"failed": "..."} when the connection itself failed.
"""

import asyncio
import json
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client


async def session_work(read, write, calls):
    async with ClientSession(read, write) as s:
        await s.initialize()
        tools = await s.list_tools()
        out = {"tools": [t.name for t in tools.tools], "schemas": {t.name: t.input_schema for t in tools.tools}, "calls": []}
        for name, args in calls:
            r = await s.call_tool(name, args)
            text = " ".join(getattr(c, "text", "") for c in r.content)
            out["calls"].append({"error": bool(r.is_error), "structured": r.structured_content, "text": text})
        return out


async def main():
    mode = sys.argv[1]
    if mode == "stdio":
        swarm, directory, store, calls = sys.argv[2:6]
        params = StdioServerParameters(command=swarm, args=["mcp", directory, "--store", store])
        async with stdio_client(params) as (read, write):
            out = await session_work(read, write, json.loads(calls))
    else:
        url, token, calls = sys.argv[2:5]
        headers = {} if token == "-" else {"Authorization": "Bearer " + token}
        try:
            async with create_mcp_http_client(headers=headers) as http:
                async with streamable_http_client(url, http_client=http) as streams:
                    read, write = streams[0], streams[1]
                    out = await session_work(read, write, json.loads(calls))
        except BaseException as e:  # the SDK wraps failures in exception groups
            out = {"failed": repr(e)}
    print(json.dumps(out))


asyncio.run(main())
