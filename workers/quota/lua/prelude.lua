-- Shared prelude, prepended to every quota script when it is loaded.
-- Time is the server's (TIME), in integer microseconds. Turning a Lua number into a
-- string costs a printf (and prints large ones as 1e+15), so hot paths pass strings:
-- TIME's own digits, ARGV as given; int() is for the rare paths.

-- Server time: (number, decimal string), both in microseconds.
local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2]), t[1] .. string.sub('00000' .. t[2], -6)
end

local function int(x)
  return string.format('%.0f', x)
end

-- A sliding-log member is "<cost>:<reservation token>"; its cost leads.
local function member_cost(m)
  return tonumber(string.match(m, '^%d+'))
end

-- Used units of a sliding log: its running sum is member '#' scored -sum (so it sorts
-- first and never falls in a time range); returns used, and the cutoff string and the
-- expired units when entries at or before the cutoff are still there (prune them).
local function log_used(key, now, win)
  local head = redis.call('ZRANGE', key, '0', '1', 'WITHSCORES')
  local sum, oldest = 0, nil
  if head[1] == '#' then
    sum = -tonumber(head[2])
    oldest = head[4] and tonumber(head[4])
  elseif head[1] then
    -- No running sum (cannot happen through these scripts): recount every entry.
    local all = redis.call('ZRANGE', key, '0', '-1')
    for j = 1, #all do
      sum = sum + member_cost(all[j])
    end
    oldest = tonumber(head[2])
  end
  local cutoff = now - win
  if oldest and oldest <= cutoff then
    local cut = int(cutoff)
    local old = redis.call('ZRANGEBYSCORE', key, '(0', cut)
    local freed = 0
    for j = 1, #old do
      freed = freed + member_cost(old[j])
    end
    return sum - freed, cut, freed
  end
  return sum, nil, 0
end
