"""Drives `swarm mcp` (stdio) or `swarm serve`'s `/mcp` (HTTP) with the
official Python MCP SDK's client, for tests/mcp_server.rs.

  client.py stdio SWARM_BIN DIR STORE CALLS_JSON
  client.py stdio-2026 SWARM_BIN DIR STORE CALLS_JSON   (server/discover, 2026-07-28)
  client.py http URL TOKEN CALLS_JSON        (TOKEN "-": none)

CALLS_JSON is a list of steps, each [tool, arguments] (a tool call) or one
of {"progress": [tool, arguments]} (a call that asks for progress; its
result gains "progress": the notifications' messages), {"resources": true}
(list resources and templates), {"read": uri}, {"subscribe": uri},
{"await_update": uri} (waits, at most a minute, for resources/updated),
{"await_status": [uri, status]} (reads the resource at each update until its
run has that status, at most a minute).
{"listen": [uri, status, step]} (2026-07-28: opens subscriptions/listen for
uri, takes step, then reads at each event until the run has that status).
"$N" in a string stands for the run id the N-th step's result carries.
Prints one JSON document:
{"tools": [names], "calls": [{"error": bool, "structured": ..., "text": ...}]}
or {"failed": "..."} when the connection itself failed.
"""

import asyncio
import json
import re
import sys

import mcp.types as types

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client


async def call(s, name, args, progress=None):
    r = await s.call_tool(name, args, progress_callback=progress)
    text = " ".join(getattr(c, "text", "") for c in r.content)
    return {"error": bool(r.is_error), "structured": r.structured_content, "text": text}


async def step(s, st, updated):
    if isinstance(st, list):
        return await call(s, st[0], st[1])
    if "progress" in st:
        seen = []

        async def progress(done, total, message):
            seen.append({"progress": done, "message": message})

        out = await call(s, st["progress"][0], st["progress"][1], progress)
        out["progress"] = seen
        return out
    try:
        if "resources" in st:
            rs = await s.list_resources()
            ts = await s.list_resource_templates()
            return {"resources": [str(r.uri) for r in rs.resources],
                    "mime": [r.mime_type for r in rs.resources],
                    "templates": [t.uri_template for t in ts.resource_templates]}
        if "read" in st:
            r = await s.read_resource(st["read"])
            return {"mime": r.contents[0].mime_type, "body": json.loads(r.contents[0].text)}
        if "subscribe" in st:
            await s.subscribe_resource(st["subscribe"])
            return {"subscribed": True}
        if "await_update" in st:
            async def wait():
                while st["await_update"] not in updated:
                    await updated["changed"].wait()
                    updated["changed"].clear()
            await asyncio.wait_for(wait(), 60)
            return {"updated": True}
        if "await_status" in st:
            uri, status = st["await_status"]
            updates = 0

            async def until():
                nonlocal updates
                while True:
                    updated["changed"].clear()
                    r = await s.read_resource(uri)
                    body = json.loads(r.contents[0].text)
                    if body["run"]["status"] == status:
                        return body
                    await updated["changed"].wait()
                    updates += 1
            return {"body": await asyncio.wait_for(until(), 60), "updates": updates}
    except Exception as e:  # an MCP error: its code, message and data
        err = getattr(e, "error", None)
        return {"failed": repr(e), "data": getattr(err, "data", None)}
    if "listen" in st:
        return await listening(s, *st["listen"], updated)
    raise ValueError(f"unknown step {st!r}")


async def listening(s, uri, status, inner, updated):
    from mcp.client.subscriptions import listen

    async with listen(s, resource_subscriptions=[uri]) as sub:
        honored = sub.honored.resource_subscriptions
        took = await step(s, inner, updated)
        events = 0

        async def until():
            nonlocal events
            while True:
                r = await s.read_resource(uri)
                body = json.loads(r.contents[0].text)
                if body["run"]["status"] == status:
                    return body
                await sub.__anext__()
                events += 1
        body = await asyncio.wait_for(until(), 60)
    return {"honored": honored, "took": took, "events": events, "body": body,
            "version": s.protocol_version}


def subst(v, done):
    if isinstance(v, str):
        return re.sub(r"\$(\d+)", lambda m: str((done[int(m.group(1))].get("structured") or {}).get("id")), v)
    if isinstance(v, list):
        return [subst(x, done) for x in v]
    if isinstance(v, dict):
        return {k: subst(x, done) for k, x in v.items()}
    return v


async def session_work(read, write, calls, modern=False):
    updated = {"changed": asyncio.Event()}

    async def on_message(m):
        m = getattr(m, "root", m)  # SDK 1.x wraps notifications; 2.x hands them over
        if isinstance(m, types.ResourceUpdatedNotification):
            updated[str(m.params.uri)] = True
            updated["changed"].set()

    async with ClientSession(read, write, message_handler=on_message) as s:
        if modern:
            await s.discover()
        else:
            await s.initialize()
        tools = await s.list_tools()
        out = {"tools": [t.name for t in tools.tools], "schemas": {t.name: t.input_schema for t in tools.tools}, "calls": []}
        for st in calls:
            out["calls"].append(await step(s, subst(st, out["calls"]), updated))
        return out


async def main():
    mode = sys.argv[1]
    if mode.startswith("stdio"):
        swarm, directory, store, calls = sys.argv[2:6]
        params = StdioServerParameters(command=swarm, args=["mcp", directory, "--store", store])
        async with stdio_client(params) as (read, write):
            out = await session_work(read, write, json.loads(calls), modern=mode == "stdio-2026")
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
