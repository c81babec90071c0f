"""A well-behaved MCP server written with the official Python SDK, for
tests/mcp_resume.rs: its one tool, `tally`, appends a line to the file
named by argv[1] each time it is called (so a test can count calls across
process restarts) and returns its text upper-cased."""

import sys

from mcp.server.mcpserver import MCPServer

COUNT = sys.argv[1]
server = MCPServer("counter")


@server.tool()
def tally(text: str) -> str:
    """Counts the call and returns the text upper-cased."""
    with open(COUNT, "a") as f:
        f.write("call\n")
    return text.upper()


server.run("stdio")
