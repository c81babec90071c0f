-- The metatable of host error tables: `{ code, message, where }` prints as
-- "where: message [code]".
return {
  __name = "swarm.error",
  __tostring = function(e)
    return tostring(e.where) .. ": " .. tostring(e.message) .. " [" .. tostring(e.code) .. "]"
  end,
}
