-- pcall, xpcall and coroutine.resume that cannot swallow a tripped limit:
-- once the VM's budget, deadline, cancellation or memory limit has tripped,
-- the error is raised again instead of being returned.
local raw_pcall, raw_xpcall, raw_resume, tripped = ...
local error = error

local function pass(ok, ...)
  if not ok and tripped((...)) then
    error((...), 0)
  end
  return ok, ...
end

return {
  pcall = function(f, ...) return pass(raw_pcall(f, ...)) end,
  xpcall = function(f, handler, ...) return pass(raw_xpcall(f, handler, ...)) end,
  resume = function(co, ...) return pass(raw_resume(co, ...)) end,
}
