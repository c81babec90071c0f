-- A mob: a lead, two coders and a critic, long-lived members whose
-- conversations live in the journal (`swarm.mob`). The lead plans, each
-- coder does its part and may message the lead or the critic with the
-- `send_message` tool, the critic reviews and tells the lead what it
-- found, and the lead sums up with every message in front of it. Run it
-- again and the same members carry on their conversations. Needs an
-- OpenAI-compatible endpoint; see README "LLM agents":
--
--   SWARM_LLM_BASE_URL=http://127.0.0.1:11434/v1 SWARM_LLM_MODEL=qwen2.5:7b \
--     swarm run blueprints/team.lua --input '"a calculator for + and *"'
--   swarm mob show team
local swarm = require "swarm"

return swarm.blueprint "team" {
  description = "A lead, two coders and a critic working a task as a mob.",
  input = { type = "string", description = "the task", minLength = 1 },

  agents = {
    lead = swarm.agent.llm {
      system = "You lead a small team of coders. Plan briefly, then sum up what the team did.",
      temperature = 0.2,
    },
    coder = swarm.agent.llm {
      system = "You are a coder on a team. Do your part in a few lines. Use send_message to "
        .. "tell the lead when you are done, or to ask the critic to look at something.",
      temperature = 0.2,
    },
    critic = swarm.agent.llm {
      system = "You review the team's work. Approve it only if it is complete and correct.",
      schema = {
        type = "object",
        properties = { approved = { type = "boolean" }, notes = { type = "string", maxLength = 300 } },
        required = { "approved", "notes" },
      },
      temperature = 0,
    },
  },

  limits = { tokens = 200000 },

  flow = function(task)
    local mob = swarm.mob("team")
    local lead = mob:ensure { id = "lead", agent = "lead", labels = { role = "lead" } }
    local critic = mob:ensure { id = "critic", agent = "critic", wire = { "lead" },
                                labels = { role = "critic" } }
    local coders = {}
    for i = 1, 2 do
      coders[i] = mob:ensure { id = "coder" .. i, agent = "coder", wire = { "lead", "critic" },
                               labels = { role = "coder" }, budget = { tokens = 50000 } }
    end
    local plan = lead:ask("Split this task between coder1 and coder2, one line each:\n" .. task)
    local work = {}
    for i, coder in ipairs(coders) do
      work[i] = coder:ask("The lead's plan:\n" .. plan .. "\n\nDo your part as coder" .. i .. ".")
    end
    local review = critic:ask("Review the team's work.\n\ncoder1:\n" .. work[1]
      .. "\n\ncoder2:\n" .. work[2])
    if not review.approved then critic:tell("lead", "Not approved yet: " .. review.notes) end
    local summary = lead:ask("Sum up for the user what the team did and what is left.")
    return { plan = plan, work = work, review = review, summary = summary }
  end,
}
