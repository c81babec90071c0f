-- An MCP server's tools as steps: the MCP reference server
-- (`npm install -g @modelcontextprotocol/server-everything`) adds two
-- numbers and echoes the sum. Each tool is an agent `everything.<tool>`,
-- journaled like any step: a resumed run does not call it again.
-- Without a global install: command = { "npx", "-y", "@modelcontextprotocol/server-everything" }.
local swarm = require "swarm"

return swarm.blueprint "mcp" {
  description = "Adds two numbers with an MCP server's tools and echoes the sum.",
  input = {
    type = "object",
    properties = { a = { type = "number" }, b = { type = "number" } },
  },
  agents = {
    everything = swarm.agent.mcp {
      command = { "mcp-server-everything" },
      tools = { "echo", "get-sum" },
      timeout = "30s",
    },
  },
  flow = function(input)
    local sum = swarm.step("everything.get-sum", { a = input.a or 2, b = input.b or 3 })
    local echoed = swarm.step("everything.echo", { message = sum.content[1] })
    return echoed.content[1]
  end,
}
