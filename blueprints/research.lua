-- A researcher with a lookup tool, a writer, and a critic that loops with
-- the writer until it approves (at most 3 rounds). Needs an
-- OpenAI-compatible endpoint; see README "LLM agents":
--
--   SWARM_LLM_BASE_URL=http://127.0.0.1:11434/v1 SWARM_LLM_MODEL=qwen2.5:7b \
--     swarm run blueprints/research.lua --input '"the Lua programming language"'
local swarm = require "swarm"

local NOTES = {
  lua = "Lua: a small embeddable scripting language from PUC-Rio (1993), with coroutines and metatables.",
  rust = "Rust: a systems language with ownership and borrowing, no garbage collector.",
}

return swarm.blueprint "research" {
  description = "Research a topic, write it up, revise until the critic approves.",
  input = { type = "string", description = "the topic to research", minLength = 1 },

  agents = {
    lookup = swarm.agent.lua {
      description = "Look a term up in the team's notes.",
      params = { type = "object", properties = { term = { type = "string" } }, required = { "term" } },
      run = function(task)
        local term = string.lower(task.input.term)
        for key, note in pairs(NOTES) do
          if string.find(term, key, 1, true) then return note end
        end
        return "no notes on " .. task.input.term
      end,
    },
    researcher = swarm.agent.llm {
      system = "You research facts. Use the lookup tool, then list the facts you found.",
      tools = { "lookup" },
      max_turns = 6,
      temperature = 0.2,
    },
    writer = swarm.agent.llm {
      system = "You write a short, clear paragraph from the facts and the critic's notes.",
      temperature = 0.5,
    },
    critic = swarm.agent.llm {
      system = "You review a paragraph. Approve it only if it is accurate and clear.",
      schema = {
        type = "object",
        -- maxLength keeps a small local model from writing notes without end
        -- (llama-cpp-python turns the schema into a grammar).
        properties = { approved = { type = "boolean" }, notes = { type = "string", maxLength = 300 } },
        required = { "approved", "notes" },
      },
      temperature = 0,
    },
  },

  hints = { layers = { "audit", { "retry", max = 2 } } },

  flow = function(topic)
    local facts = swarm.step("researcher", { prompt = "Research: " .. tostring(topic) })
    local notes, draft = "", nil
    for round = 1, 3 do
      draft = swarm.step("writer", { prompt = "Facts:\n" .. facts .. "\n\nCritic's notes: " .. notes })
      local review = swarm.step("critic", { prompt = draft })
      if review.approved then return { text = draft, rounds = round } end
      notes = review.notes
    end
    return { text = draft, rounds = 3, approved = false }
  end,
}
