-- Reserve (or probe) every limit of one target, all or nothing.
--
-- KEYS[1]  cooldown hash of the provider (fields "p" and "m:<model>" = "<until_us>|<reason>")
-- KEYS[2]  reservation record (hash), written on a grant when reconcile will need it
-- KEYS[3..] one per limit: a sliding-log ZSET (rolling) or a period counter (calendar)
-- ARGV[1] "r" reserve | "p" probe (consumes nothing, writes nothing)
-- ARGV[2] reservation token (suffix of sliding-log members)
-- ARGV[3] count: probe asks whether count x cost would pass now
-- ARGV[4] cooldown field of the model
-- ARGV[5] "1": the caller chose the id: refuse a duplicate and always write the record
-- ARGV[6] record TTL (ms)
-- then 6 per limit: kind ("z" rolling | "c" calendar), cost, limit,
--   z: window_us, ttl_ms ; c: period start_s, period end_s ; unit code ("r" | "t" | "n")
--
-- Sliding logs keep their running sum in the ZSET itself as member "#" with score -sum:
-- negative, so it never falls in a time range, and it expires with its entries.
-- Replies (integers, microseconds): {1, now} granted; {0, now, wait_us, index} refused;
-- {2, now, 0, index} cost above the limit (never); {3, now, 0, index} stale calendar
-- period; {4, now, wait_us, "p"|"m", reason} cooldown; {5, now} duplicate id.
local now = now_us()
local probe = ARGV[1] == 'p'
local count = tonumber(ARGV[3])

local cool = redis.call('HMGET', KEYS[1], 'p', ARGV[4])
local cwait, cwhich, creason = 0, nil, nil
for i = 1, 2 do
  local v = cool[i]
  if v then
    local untl, reason = string.match(v, '^(%d+)|(.*)$')
    local w = tonumber(untl) - now
    if w > cwait then
      cwait, cwhich, creason = w, (i == 1) and 'p' or 'm', reason
    end
  end
end
if cwait > 0 then
  return {4, now, cwait, cwhich, creason}
end

if ARGV[5] == '1' and not probe and redis.call('EXISTS', KEYS[2]) == 1 then
  return {5, now}
end

local n = #KEYS - 2
local used = {}
local expired = {}
local worst_wait, worst_idx = -1, 0
for i = 1, n do
  local a = 6 + (i - 1) * 6
  local kind = ARGV[a + 1]
  local cost = tonumber(ARGV[a + 2]) * count
  local limit = tonumber(ARGV[a + 3])
  local key = KEYS[i + 2]
  if cost > limit then
    return {2, now, 0, i}
  end
  if kind == 'z' then
    local win = tonumber(ARGV[a + 4])
    local cutoff = int(now - win)
    local sum = -(tonumber(redis.call('ZSCORE', key, '#')) or 0)
    local old = redis.call('ZRANGEBYSCORE', key, '(0', cutoff)
    for j = 1, #old do
      sum = sum - member_cost(old[j])
    end
    used[i] = sum
    expired[i] = #old
    if sum + cost > limit then
      -- Exact wait: oldest entries first, until enough has left the window.
      local need, freed, off, w = sum + cost - limit, 0, 0, nil
      while not w do
        local page = redis.call('ZRANGEBYSCORE', key, '(' .. cutoff, '+inf',
                                'WITHSCORES', 'LIMIT', off, 128)
        if #page == 0 then
          w = 1
          break
        end
        for j = 1, #page, 2 do
          freed = freed + member_cost(page[j])
          if freed >= need then
            w = tonumber(page[j + 1]) + win - now
            break
          end
        end
        off = off + 128
      end
      if w > worst_wait then
        worst_wait, worst_idx = w, i
      end
    end
  else
    local start, stop = tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5])
    if now < start * 1000000 or now >= stop * 1000000 then
      return {3, now, 0, i}
    end
    local v = tonumber(redis.call('GET', key)) or 0
    used[i] = v
    if v + cost > limit then
      local w = stop * 1000000 - now
      if w > worst_wait then
        worst_wait, worst_idx = w, i
      end
    end
  end
end

if worst_idx > 0 then
  return {0, now, worst_wait, worst_idx}
end
if probe then
  return {1, now}
end

local token = ARGV[2]
local rec = {}
local tok, neu = nil, nil
for i = 1, n do
  local a = 6 + (i - 1) * 6
  local kind = ARGV[a + 1]
  local cost_s = ARGV[a + 2]
  local key = KEYS[i + 2]
  local unit = ARGV[a + 6]
  if kind == 'z' then
    if expired[i] > 0 then
      redis.call('ZREMRANGEBYSCORE', key, '(0', int(now - tonumber(ARGV[a + 4])))
    end
    redis.call('ZADD', key, now, cost_s .. ':' .. token, int(-(used[i] + tonumber(cost_s))), '#')
    redis.call('PEXPIRE', key, ARGV[a + 5])
  else
    if redis.call('INCRBY', key, cost_s) == tonumber(cost_s) then
      redis.call('EXPIREAT', key, int(tonumber(ARGV[a + 5]) + 86400))
    end
  end
  if unit ~= 'r' then
    rec[#rec + 1] = unit .. kind .. key
    if unit == 't' then tok = cost_s else neu = cost_s end
  end
end
if #rec > 0 or ARGV[5] == '1' then
  redis.call('HSET', KEYS[2], 't', tok or '0', 'n', neu or '0', 'k', table.concat(rec, '\n'))
  redis.call('PEXPIRE', KEYS[2], ARGV[6])
end
return {1, now}
