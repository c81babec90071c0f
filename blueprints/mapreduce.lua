-- Map-reduce: count the words of 1,000 generated lines through a process
-- agent (a small sh script), 16 at a time, then add the counts up in Lua.
--
--   cargo run --release -- run blueprints/mapreduce.lua --input '{"lines": 1000}'
local swarm = require "swarm"

return swarm.blueprint "mapreduce" {
  agents = {
    -- Commands run in the blueprint's directory.
    wordcount = swarm.agent.process {
      cmd = { "sh", "../examples/agents/wordcount.sh" },
      timeout = "30s",
    },
  },
  hints = { layers = { { "retry", max = 2, backoff_ms = 10 } } },

  flow = function(input)
    local n = (input and input.lines) or 1000
    local lines = {}
    for i = 1, n do
      lines[i] = ("line %d has exactly %d words in it"):format(i, 8)
    end
    local counts = swarm.map(lines, function(line)
      return swarm.step("wordcount", line)
    end, { concurrency = 16 })
    local words = 0
    for _, c in ipairs(counts) do words = words + c.words end
    return { lines = #counts, words = words }
  end,
}
