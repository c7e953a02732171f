-- A table-churning Lua program for the benchmark (Lua allocates through realloc and free):
-- records created and dropped at random, binary trees of small tables built and dropped,
-- strings built piece by piece, tables sorted; deterministic output.
-- Usage: lua5.4 lua_workload.lua SCALE
local scale = tonumber(arg[1]) or 1
local state = 12345

local function random(n)  -- a linear congruential generator: the same numbers every run
  state = (state * 1103515245 + 12345) % 2147483648
  return state % n
end

local function make_record(i)
  local tags = {}
  for t = 1, 1 + random(4) do tags[t] = "t" .. random(400) end
  return {id = i, name = "user" .. random(100000), score = random(10000) / 100,
          tags = tags, pos = {x = random(1000), y = random(1000)}}
end

local function tree(depth)  -- a binary tree of small tables, as in the binary-trees benchmark
  if depth == 0 then return {} end
  return {tree(depth - 1), tree(depth - 1)}
end

local function count(node)
  if node[1] == nil then return 1 end
  return 1 + count(node[1]) + count(node[2])
end

local function one_round()
  local live, checksum = {}, 0
  for i = 1, 100000 do  -- a bounded live set: records replaced at random
    local slot = 1 + random(20000)
    local old = live[slot]
    if old then checksum = checksum + #old.tags end
    live[slot] = make_record(i)
  end
  local keep = tree(12)  -- one long-lived tree while many short-lived ones come and go
  for depth = 4, 14, 2 do
    for _ = 1, 2 ^ (16 - depth) do checksum = checksum + count(tree(depth)) end
  end
  local list = {}
  for _, record in pairs(live) do list[#list + 1] = record end
  table.sort(list, function(a, b)
    if a.score ~= b.score then return a.score > b.score end
    return a.id < b.id
  end)
  local parts = {}
  for _, record in ipairs(list) do
    parts[#parts + 1] = record.name .. ":" .. record.pos.x .. ":" .. table.concat(record.tags, ",")
  end
  local text = table.concat(parts, ";")
  local counts = {}
  for word in text:gmatch("t%d+") do counts[word] = (counts[word] or 0) + 1 end
  local words = {}
  for word, n in pairs(counts) do words[#words + 1] = word .. "=" .. n end
  table.sort(words)
  return checksum + #text + #words + #list[1].name + #words[1] + count(keep)
end

local checksum = 0
for _ = 1, scale do checksum = checksum + one_round() end
print(checksum)
