-- Blueprint validation: every problem with what a blueprint file returned,
-- as `{ where, field, message }` entries, not just the first. Loaded only
-- by VMs that validate (the host's, before a run); agent VMs evaluate
-- blueprints already validated and never load it.
local host, duration = ...
local pairs, ipairs, type, tostring = pairs, ipairs, type, tostring

-- The host's agent kinds (`src/spawn/kinds.rs`): fields, types, requirements.
local kinds_cache
local function kinds()
  kinds_cache = kinds_cache or host.agent_kinds()
  return kinds_cache
end

local BLUEPRINT_FIELDS = { description = "string", agents = "table", hints = "table",
                           layers = "table", gate = "table", limits = "table", flow = "function",
                           input = "table" }

local function check_type(v, want)
  if want == "duration" then return duration(v) ~= nil end
  return type(v) == want
end

local function layer_list(list, at, field, bp, errors, lead)
  if type(list) ~= "table" then
    errors[#errors + 1] = { where = at, field = field, message = "must be a list of layer names" }
    return
  end
  for i, entry in ipairs(list) do
    local key = type(entry) == "table" and entry[1] or entry
    local f = field .. "[" .. i .. "]"
    if type(entry) == "table" and entry.__swarm == "layer" then
      errors[#errors + 1] = { where = at, field = f, message = "must name a layer: declare a "
        .. "swarm.layer { ... } in the blueprint's `layers = { name = ... }` and put its name here" }
    elseif type(key) ~= "string" then
      errors[#errors + 1] = { where = at, field = f, message = "must be a layer name or { name, options... }" }
    elseif not host.is_layer(key) and not (type(bp.spec.layers) == "table" and bp.spec.layers[key]) then
      local known = {}
      for k in host.layer_keys():gmatch("[^, ]+") do known[#known + 1] = k end
      if type(bp.spec.layers) == "table" then
        for k in pairs(bp.spec.layers) do known[#known + 1] = tostring(k) end
      end
      errors[#errors + 1] = { where = at, field = f, needle = { lead[1], lead[2], key },
        message = "unknown layer `" .. key .. "` (built-in: " .. host.layer_keys() .. ")"
          .. host.did_you_mean(key, known) }
    elseif host.is_layer(key) and not (type(bp.spec.layers) == "table" and bp.spec.layers[key]) then
      local problem = host.layer_problem(type(entry) == "table" and entry or { entry })
      if problem then
        local needle = { lead[1], lead[2], key }
        if problem.needle ~= key then needle[4] = problem.needle end
        errors[#errors + 1] = { where = at, field = f .. " (" .. key .. ")", needle = needle,
          message = problem.message }
      end
    end
  end
end

local function kind_of(a)
  local kind = type(a) == "table" and type(a.__swarm) == "string" and a.__swarm:match("^agent%.(.+)$")
  return kind and kinds().kinds[kind]
end

local function check_agent(name, a, bp, errors)
  local field = "agents." .. tostring(name)
  local kind = kind_of(a)
  if not kind then
    errors[#errors + 1] = { where = bp.where, field = field, message = "must be " .. kinds().list }
    return
  end
  for k, v in pairs(a.spec) do
    local want = kind.fields[k] or kinds().profile[k]
    if not want then
      local known = {}
      for f in pairs(kind.fields) do known[#known + 1] = f end
      for f in pairs(kinds().profile) do known[#known + 1] = f end
      errors[#errors + 1] = { where = a.where, field = field .. "." .. tostring(k), needle = tostring(k),
        message = "unknown field" .. host.did_you_mean(tostring(k), known) }
    elseif not check_type(v, want) then
      errors[#errors + 1] = { where = a.where, field = field .. "." .. k,
        message = "must be a " .. want .. ", got " .. type(v) }
    end
  end
  local need = kind.requires.fields
  if #need > 0 then
    local present = false
    for _, f in ipairs(need) do
      local v = a.spec[f]
      if v ~= nil and v ~= "" then present = true end
    end
    if not present then
      errors[#errors + 1] = { where = a.where, field = field .. "." .. need[1], message = kind.requires.message }
    end
  end
  if a.__swarm == "agent.llm" and type(a.spec.tools) == "table" then
    for i, t in ipairs(a.spec.tools) do
      local family = type(t) == "string" and t:match("^([^.]+)%.") or nil
      local fam = family and type(bp.spec.agents) == "table" and bp.spec.agents[family]
      local mcp_tool = type(fam) == "table" and fam.__swarm == "agent.mcp"
      if not mcp_tool and (type(bp.spec.agents) ~= "table" or bp.spec.agents[t] == nil) then
        errors[#errors + 1] = { where = a.where, field = field .. ".tools[" .. i .. "]",
          message = "`" .. tostring(t) .. "` is not an agent of this blueprint" }
      end
    end
  end
  if a.spec.layers then layer_list(a.spec.layers, a.where, field .. ".layers", bp, errors, { "layers", "" }) end
end

--- Every problem with `bp`, as `{ where, field, message }` entries.
local function validate(bp)
  local errors = {}
  if type(bp) ~= "table" or bp.__swarm ~= "blueprint" then
    local hint = bp == nil and " (did you forget `return` before swarm.blueprint?)" or ""
    return { { where = "?", field = "(return value)",
               message = "a blueprint file must return swarm.blueprint \"name\" { ... }" .. hint } }
  end
  local spec = bp.spec
  for k, v in pairs(spec) do
    local want = BLUEPRINT_FIELDS[k]
    if not want then
      local known = {}
      for f in pairs(BLUEPRINT_FIELDS) do known[#known + 1] = f end
      errors[#errors + 1] = { where = bp.where, field = tostring(k), needle = tostring(k),
        message = "unknown field" .. host.did_you_mean(tostring(k), known) }
    elseif type(v) ~= want then
      errors[#errors + 1] = { where = bp.where, field = k, message = "must be a " .. want .. ", got " .. type(v) }
    end
  end
  if type(spec.flow) ~= "function" then
    errors[#errors + 1] = { where = bp.where, field = "flow", message = "is required (function(input))" }
  end
  if type(spec.agents) == "table" then
    for name, a in pairs(spec.agents) do check_agent(name, a, bp, errors) end
  end
  if type(spec.hints) == "table" then
    for k, v in pairs(spec.hints) do
      if k == "layers" then
        layer_list(v, bp.where, "hints.layers", bp, errors, { "hints", "layers" })
      else
        errors[#errors + 1] = { where = bp.where, field = "hints." .. tostring(k), needle = { "hints", tostring(k) },
          message = "unknown hint (hints: layers)" .. host.did_you_mean(tostring(k), { "layers" }) }
      end
    end
  end
  if type(spec.layers) == "table" then
    for name, l in pairs(spec.layers) do
      local field = "layers." .. tostring(name)
      if type(l) ~= "table" or l.__swarm ~= "layer" then
        errors[#errors + 1] = { where = bp.where, field = field, message = "must be swarm.layer{ before = ..., after = ... }" }
      else
        for k, v in pairs(l.spec) do
          if (k ~= "before" and k ~= "after") or type(v) ~= "function" then
            errors[#errors + 1] = { where = l.where, field = field .. "." .. tostring(k),
              message = "only `before` and `after` functions are allowed" }
          end
        end
      end
    end
  end
  if type(spec.gate) == "table" then
    for role, verbs in pairs(spec.gate) do
      local field = "gate." .. tostring(role)
      if not host.is_role(role) then
        errors[#errors + 1] = { where = bp.where, field = field, message = "unknown role (operator, worker, senior, observer)" }
      elseif type(verbs) ~= "table" then
        errors[#errors + 1] = { where = bp.where, field = field, message = "must be a list of verb names" }
      else
        for i, verb in ipairs(verbs) do
          if not host.is_verb(verb) then
            errors[#errors + 1] = { where = bp.where, field = field .. "[" .. i .. "]",
              message = "unknown verb `" .. tostring(verb) .. "`" }
          end
        end
      end
    end
  end
  return errors
end

return validate
