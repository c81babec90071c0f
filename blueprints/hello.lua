-- The smallest useful blueprint: a Lua agent and a Rust agent, one after
-- the other, then two in parallel. No keys, no network.
--
--   cargo run --release -- run blueprints/hello.lua --input '{"name":"swarm"}'
local swarm = require "swarm"

return swarm.blueprint "hello" {
  description = "Greets someone, twice over.",

  agents = {
    greeter = swarm.agent.lua {
      description = "Builds a greeting.",
      run = function(task)
        local name = task.input and task.input.name or "world"
        swarm.worker.emit("progress", { greeting = name })
        return "Hello, " .. name .. "!"
      end,
    },
    shout = swarm.agent.rust { name = "upper" },
    count = swarm.agent.lua {
      run = function(task) return #task.input end,
    },
  },

  hints = { layers = { "audit" } },

  flow = function(input)
    local greeting = swarm.step("greeter", input)
    local loud, length = table.unpack(swarm.parallel {
      function() return swarm.step("shout", greeting) end,
      function() return swarm.step("count", greeting) end,
    })
    return { greeting = greeting, loud = loud, length = length }
  end,
}
