-- A pretty printer for Lua values, used by `swarm repl`.
--
--   local pretty = require "swarm.pretty"
--   print(pretty({ b = 1, a = { 1, 2 } }))   --> { a = { 1, 2 }, b = 1 }
--
-- Keys are sorted (numbers, then strings, then the rest), `__tostring` is
-- respected, cycles print as <cycle>, and depth (default 4) and width
-- (default 40 entries per table) are limited. Short tables stay on one
-- line; long ones break into one entry per line.
local swarm = require "swarm"
local type, tostring, pairs, getmetatable, sort, concat, format =
  type, tostring, pairs, getmetatable, table.sort, table.concat, string.format

local M = {}

local kind_rank = { number = 1, string = 2 }

local function key_before(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then return (kind_rank[ta] or 3) < (kind_rank[tb] or 3) end
  if ta == "number" or ta == "string" then return a < b end
  return tostring(a) < tostring(b)
end

local function quote(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    local named = { ["\n"] = "\\n", ["\t"] = "\\t", ["\r"] = "\\r", ['"'] = '\\"', ["\\"] = "\\\\" }
    return named[c] or format("\\%d", c:byte())
  end) .. '"'
end

local function scalar(v)
  if type(v) == "string" then return quote(v) end
  if swarm.json.is_null(v) then return "null" end
  return tostring(v)
end

--- Renders `v`; `opts.depth` and `opts.width` override the limits.
function M.pretty(v, opts)
  local max_depth = opts and opts.depth or 4
  local max_width = opts and opts.width or 40
  local open = {}

  local function render(x, depth, indent)
    if type(x) ~= "table" then return scalar(x) end
    local mt = getmetatable(x)
    if type(mt) == "table" and mt.__tostring then return tostring(x) end
    if open[x] then return "<cycle>" end
    local keys, n = {}, 0
    for k in pairs(x) do
      n = n + 1
      keys[n] = k
    end
    if n == 0 then return "{}" end
    if depth > max_depth then return "{...}" end
    sort(keys, key_before)
    open[x] = true
    local parts, seq = {}, 1
    for i = 1, n do
      if i > max_width then
        parts[#parts + 1] = "... (" .. (n - max_width) .. " more)"
        break
      end
      local k = keys[i]
      local val = render(x[k], depth + 1, indent .. "  ")
      if k == seq then
        parts[#parts + 1] = val
        seq = seq + 1
      elseif type(k) == "string" and k:match("^[%a_][%w_]*$") then
        parts[#parts + 1] = k .. " = " .. val
      else
        parts[#parts + 1] = "[" .. render(k, max_depth, indent) .. "] = " .. val
      end
    end
    open[x] = nil
    local line = "{ " .. concat(parts, ", ") .. " }"
    if #line <= 72 and not line:find("\n") then return line end
    local inner = indent .. "  "
    return "{\n" .. inner .. concat(parts, ",\n" .. inner) .. "\n" .. indent .. "}"
  end

  return render(v, 1, "")
end

return M
