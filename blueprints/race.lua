-- A race with a timeout: a slow agent (capped at 200 ms by a `timeout`
-- layer) against a quick one; the quick one wins and the slow one is
-- cancelled. Then the slow one alone, caught with `pstep`.
local swarm = require "swarm"

return swarm.blueprint "race" {
  agents = {
    slow = swarm.agent.rust { name = "sleep", layers = { { "timeout", ms = 200 } } },
    quick = swarm.agent.rust { name = "sleep" },
  },

  flow = function()
    local winner, index = swarm.race {
      function() return swarm.step("slow", { ms = 5000, value = "slow" }) end,
      function() return swarm.step("quick", { ms = 10, value = "quick" }) end,
    }
    local ok, err = swarm.pstep("slow", { ms = 5000, value = "never" })
    return { winner = winner, index = index, alone = ok and "finished" or err.code }
  end,
}
