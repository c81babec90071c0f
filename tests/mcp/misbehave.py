"""A deliberately bad MCP server over stdio, one fault per mode (argv[1]),
for tests/mcp_faults.rs. Written on raw JSON lines, not an SDK, because
an SDK would refuse to misbehave. It answers `initialize` with protocol
revision 2025-11-25, so a client that asked for a newer one negotiates
down. Tools: `echo` (text: string, required) and `fail` (isError).

Modes, each about `tools/call`:
  good       answer normally
  crash      write to stderr, then exit 3
  crash_once crash on the first call of all processes (marker: argv[2]), then good
  hang       never answer
  garbage    print a line that is not JSON
  huge       answer with a text of argv[2] bytes
  flood      write one endless line, never a newline
  nostart    (at start) write to stderr and exit 1 before any answer
  count      answer normally, appending a line to the file argv[2] per call
"""

import json
import os
import sys
import time

MODE = sys.argv[1] if len(sys.argv) > 1 else "good"
ARG = sys.argv[2] if len(sys.argv) > 2 else ""

TOOLS = [
    {
        "name": "echo",
        "description": "Returns its text.",
        "inputSchema": {
            "type": "object",
            "properties": {"text": {"type": "string"}},
            "required": ["text"],
        },
    },
    {
        "name": "fail",
        "description": "Always fails.",
        "inputSchema": {"type": "object"},
    },
]


def send(msg):
    sys.stdout.write(json.dumps(msg) + "\n")
    sys.stdout.flush()


def call(req):
    name = req["params"]["name"]
    args = req["params"].get("arguments") or {}
    mode = MODE
    if mode == "crash_once":
        if os.path.exists(ARG):
            mode = "good"
        else:
            open(ARG, "w").close()
            mode = "crash"
    if mode == "crash":
        sys.stderr.write("misbehave: crashing on purpose\n")
        sys.stderr.flush()
        os._exit(3)
    if mode == "hang":
        while True:
            time.sleep(3600)
    if mode == "garbage":
        sys.stdout.write("this is not JSON-RPC\n")
        sys.stdout.flush()
        return
    if mode == "flood":
        chunk = "x" * 65536
        while True:
            sys.stdout.write(chunk)
    if mode == "huge":
        text = "y" * int(ARG)
        send({"jsonrpc": "2.0", "id": req["id"], "result": {"content": [{"type": "text", "text": text}]}})
        return
    if mode == "count":
        with open(ARG, "a") as f:
            f.write("call\n")
    if name == "fail":
        result = {"content": [{"type": "text", "text": "it failed"}], "isError": True}
    else:
        result = {"content": [{"type": "text", "text": args.get("text", "")}]}
    send({"jsonrpc": "2.0", "id": req["id"], "result": result})


def main():
    if MODE == "nostart":
        sys.stderr.write("misbehave: refusing to start\n")
        sys.stderr.flush()
        sys.exit(1)
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        method = req.get("method")
        if "id" not in req:
            continue
        if method == "initialize":
            send({"jsonrpc": "2.0", "id": req["id"], "result": {
                "protocolVersion": "2025-11-25",
                "capabilities": {"tools": {"listChanged": True}},
                "serverInfo": {"name": "misbehave", "version": "0"},
            }})
        elif method == "tools/list":
            send({"jsonrpc": "2.0", "id": req["id"], "result": {"tools": TOOLS}})
        elif method == "tools/call":
            call(req)
        elif method == "ping":
            send({"jsonrpc": "2.0", "id": req["id"], "result": {}})
        else:
            send({"jsonrpc": "2.0", "id": req["id"],
                  "error": {"code": -32601, "message": "no method " + str(method)}})


main()
