-- The sandbox's table.insert, remove, move, concat, unpack and sort.
--
-- The stock C versions loop on counts a script controls (`#t` through a
-- `__len` metamethod, `table.move`'s range, `unpack`'s bounds) without
-- ever returning to the VM, so the instruction hook, the deadline and
-- cancellation could not stop them. These are written in Lua, so every
-- step of their loops is an instruction the hook counts, and each takes a
-- table's length once (a `__len` that answers differently the second time
-- gains nothing). Where a stock C function still does the bulk of the work
-- (`concat`, `unpack`, `sort`) it gets a plain table whose size is real
-- (allocated under the memory limit) or a count charged first.
-- Errors read as the stock ones.
local raw_concat, raw_unpack, raw_sort, charge, tointeger, ult, getmetatable = ...
local type, select, error = type, select, error

local function bad(n, fname, msg)
  error("bad argument #" .. n .. " to '" .. fname .. "' (" .. msg .. ")", 3)
end

local function checktable(t, fname)
  if type(t) ~= "table" then bad(1, fname, "table expected, got " .. type(t)) end
end

local function int(v, n, fname)
  local i = tointeger(v)
  if i == nil then
    if type(v) == "number" then bad(n, fname, "number has no integer representation") end
    bad(n, fname, "number expected, got " .. (v == nil and "no value" or type(v)))
  end
  return i
end

local function optint(v, n, fname, default)
  if v == nil then return default end
  return int(v, n, fname)
end

local function insert(t, ...)
  checktable(t, "insert")
  local e = #t + 1
  local n = select("#", ...)
  if n == 1 then
    t[e] = ...
    return
  end
  if n ~= 2 then error("wrong number of arguments to 'insert'", 2) end
  local pos, v = ...
  pos = int(pos, 2, "insert")
  -- 1 <= pos <= e, as an unsigned comparison, as Lua does it.
  if not ult(pos - 1, e) then bad(2, "insert", "position out of bounds") end
  for i = e, pos + 1, -1 do
    t[i] = t[i - 1]
  end
  t[pos] = v
end

local function remove(t, pos)
  checktable(t, "remove")
  local size = #t
  pos = optint(pos, 2, "remove", size)
  if pos ~= size and not (pos - 1 == size or ult(pos - 1, size)) then
    bad(2, "remove", "position out of bounds")
  end
  local v = t[pos]
  while pos < size do
    t[pos] = t[pos + 1]
    pos = pos + 1
  end
  t[pos] = nil
  return v
end

local maxinteger = math.maxinteger

local function move(a1, f, e, t, a2)
  f, e, t = int(f, 2, "move"), int(e, 3, "move"), int(t, 4, "move")
  local dest = a2
  if dest == nil then dest = a1 end
  checktable(a1, "move")
  if type(dest) ~= "table" then bad(5, "move", "table expected, got " .. type(dest)) end
  if e >= f then
    if not (f > 0 or e < maxinteger + f) then bad(3, "move", "too many elements to move") end
    local n = e - f + 1
    if not (t <= maxinteger - n + 1) then bad(4, "move", "destination wrap around") end
    if t > e or t <= f or (a2 ~= nil and a1 ~= dest) then
      for i = 0, n - 1 do
        dest[t + i] = a1[f + i]
      end
    else
      for i = n - 1, 0, -1 do
        dest[t + i] = a1[f + i]
      end
    end
  end
  return dest
end

-- More results than the Lua stack holds (LUAI_MAXSTACK).
local MAX_RESULTS = 1000000

local function unpack(t, i, j)
  i = optint(i, 2, "unpack", 1)
  if j == nil then j = #t else j = int(j, 3, "unpack") end
  if i > j then return end
  local n = j - i
  if n < 0 or n >= MAX_RESULTS then error("too many results to unpack", 2) end
  charge(n)
  return raw_unpack(t, i, j)
end

local function concat(t, sep, i, j)
  checktable(t, "concat")
  if sep == nil then sep = "" end
  i = optint(i, 3, "concat", 1)
  if j == nil then j = #t else j = int(j, 4, "concat") end
  -- A plain table's elements are real: the stock loop stops at the first
  -- missing one, and the result grows under the memory limit.
  if getmetatable(t) == nil then return raw_concat(t, sep, i, j) end
  local parts, n = {}, 0
  for k = i, j do
    local v = t[k]
    local kind = type(v)
    if kind ~= "string" and kind ~= "number" then
      error("invalid value (at index " .. k .. ") in table for 'concat'", 2)
    end
    n = n + 1
    parts[n] = v
  end
  return raw_concat(parts, sep, 1, n)
end

local function sort(t, cmp)
  checktable(t, "sort")
  if cmp ~= nil and type(cmp) ~= "function" then
    bad(2, "sort", "function expected, got " .. type(cmp))
  end
  local n = #t
  if n > 1 then
    if n >= 0x7fffffff then bad(1, "sort", "array too big") end
    -- About n log n comparisons, charged before the C sort runs them.
    local cost, m = n, n
    while m > 1 do cost, m = cost + n, m // 2 end
    charge(cost)
  end
  if getmetatable(t) == nil then return raw_sort(t, cmp) end
  -- Sort a plain copy (its size is real), then write the order back.
  local copy = {}
  for k = 1, n do
    local v = t[k]
    if v == nil then error("invalid value (at index " .. k .. ") in table for 'sort'", 2) end
    copy[k] = v
  end
  raw_sort(copy, cmp)
  for k = 1, n do
    t[k] = copy[k]
  end
end

return {
  insert = insert,
  remove = remove,
  move = move,
  unpack = unpack,
  concat = concat,
  sort = sort,
}
