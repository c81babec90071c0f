-- A writer/reviewer loop. The writer is flaky (its first attempt fails;
-- `retry` runs it again). The reviewer rejects short drafts; after two
-- rounds the `senior_escalation` layer asks a human to overrule it, and
-- the flow finally asks the senior to approve the release.
--
--   cargo run --release -- run blueprints/review.lua --input '{"topic":"swarms"}' \
--     --answer 'escalate:reviewer={"ok":true,"note":"good enough"}' --answer approve=yes
local swarm = require "swarm"

return swarm.blueprint "review" {
  agents = {
    writer = swarm.agent.lua {
      system = "You write short paragraphs.",
      layers = { { "retry", max = 3, backoff_ms = 1 } },
      run = function(task)
        if task.input.round == 1 and task.retry == 0 then
          -- Flaky on the very first try: the retry layer runs us again.
          error("writer warming up")
        end
        return ("Draft %d about %s."):format(task.input.round, task.input.topic)
      end,
    },
    reviewer = swarm.agent.lua {
      layers = { "senior_escalation" },
      run = function(task)
        if #task.input < 40 then
          return nil, { verdict = "too short", length = #task.input }
        end
        return { verdict = "approved" }
      end,
    },
  },
  hints = { layers = { "audit" } },

  flow = function(input)
    local drafts = {}
    for round = 1, 2 do
      drafts[round] = swarm.step("writer", { topic = input.topic, round = round })
    end
    local review = swarm.step("reviewer", drafts[#drafts])
    local approved = swarm.ask { key = "approve", text = "Release the draft?", draft = drafts[#drafts] }
    return { draft = drafts[#drafts], review = review, approved = approved }
  end,
}
