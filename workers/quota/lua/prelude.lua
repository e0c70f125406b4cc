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

-- A sliding log (ZSET) holds entries "<cost>:<token>" scored by time (us) and two
-- sentinels with negative scores, so they sort first and never fall in a time range:
-- '#' scored -sum (the running sum of its entries) and '~' scored -deadline (when its
-- TTL ends: the TTL is refreshed only when it would not outlive a new entry's window).
-- Returns used units (entries after now - win), the deadline (or nil), and, when entries
-- at or before the cutoff remain, the cutoff string and their units (to prune).
local function log_used(key, now, win)
  local head = redis.call('ZRANGE', key, '0', '2', 'WITHSCORES')
  local sum, deadline, oldest = nil, nil, nil
  for j = 1, #head, 2 do
    local m = head[j]
    if m == '#' then
      sum = -tonumber(head[j + 1])
    elseif m == '~' then
      deadline = -tonumber(head[j + 1])
    elseif not oldest then
      oldest = tonumber(head[j + 1])
    end
  end
  if not sum then
    -- No running sum (cannot happen through these scripts): recount every entry.
    sum = 0
    local all = redis.call('ZRANGEBYSCORE', key, '(0', '+inf')
    for j = 1, #all do
      sum = sum + member_cost(all[j])
    end
  end
  local cutoff = now - win
  if oldest and oldest <= cutoff then
    local cut = int(cutoff)
    local old = redis.call('ZRANGEBYSCORE', key, '(0', cut)
    local freed = 0
    for j = 1, #old do
      freed = freed + member_cost(old[j])
    end
    return sum - freed, deadline, cut, freed
  end
  return sum, deadline, nil, 0
end

-- Add an entry (score now_s) to a sliding log whose entries then sum to new_sum,
-- pruning what left the window and refreshing the TTL (ttl_ms, a string) when needed.
local function log_add(key, now, now_s, win, deadline, cut, new_sum, entry, ttl_ms)
  if cut then
    redis.call('ZREMRANGEBYSCORE', key, '(0', cut)
  end
  if deadline and deadline - now >= win + 1000000 then
    redis.call('ZADD', key, now_s, entry, int(-new_sum), '#')
  else
    local ttl = tonumber(ttl_ms)
    redis.call('ZADD', key, now_s, entry, int(-new_sum), '#', int(-(now + ttl * 1000)), '~')
    redis.call('PEXPIRE', key, ttl_ms)
  end
end
