-- Reserve (or probe) every limit of one target, all or nothing.
--
-- KEYS[1]  cooldown hash of the provider (fields "p" and "m:<model>" = "<until_us>|<reason>")
-- KEYS[2]  reservation record (a string "<tokens>\n<milli-neurons>\n<unit><kind><key>..."),
--          written on a grant when reconcile will need it
-- KEYS[3..] one per limit: a sliding-log ZSET (rolling) or a period counter (calendar)
-- ARGV[1] "r" reserve | "p" probe (consumes nothing, writes nothing)
-- ARGV[2] reservation token (suffix of sliding-log members)
-- ARGV[3] count: probe asks whether count x cost would pass now
-- ARGV[4] cooldown field of the model
-- ARGV[5] "1": the caller chose the id: refuse a duplicate and always write the record
-- ARGV[6] record TTL (ms)
-- then 6 per limit: kind and unit ("z" rolling | "c" calendar, then "r" | "t" | "n"),
--   cost, limit, a, b, c.  z: a = window_us, b = TTL ms (> 2 windows) ; c: a = period start s,
--   b = period end s, c = expire-at s
--
-- Replies (integers; times in microseconds): {1, now} granted; {0, now, wait_us, index}
-- refused; {2, now, 0, index} cost above the limit (never); {3, now, 0, index} stale
-- calendar period; {4, now, wait_us, "p"|"m", reason} cooldown; {5, now} duplicate id.
local now, now_s = now_us()
local probe = ARGV[1] == 'p'
local count = tonumber(ARGV[3])

if redis.call('EXISTS', KEYS[1]) == 1 then
  local cool = redis.call('HMGET', KEYS[1], 'p', ARGV[4])
  local cwait, cwhich, creason = 0, nil, nil
  for i = 1, 2 do
    if cool[i] then
      local untl, reason = string.match(cool[i], '^(%d+)|(.*)$')
      local w = tonumber(untl) - now
      if w > cwait then
        cwait, cwhich, creason = w, (i == 1) and 'p' or 'm', reason
      end
    end
  end
  if cwait > 0 then
    return {4, now, cwait, cwhich, creason}
  end
end

if ARGV[5] == '1' and not probe and redis.call('EXISTS', KEYS[2]) == 1 then
  return {5, now}
end

local n = #KEYS - 2
local used, cut, dead = {}, {}, {}
local worst_wait, worst_idx = -1, 0
for i = 1, n do
  local a = 6 + (i - 1) * 6
  local cost = tonumber(ARGV[a + 2]) * count
  local limit = tonumber(ARGV[a + 3])
  local key = KEYS[i + 2]
  if cost > limit then
    return {2, now, 0, i}
  end
  if string.byte(ARGV[a + 1]) == 122 then  -- 'z'
    local win = tonumber(ARGV[a + 4])
    local u, d, c = log_used(key, now, win)
    used[i], dead[i], cut[i] = u, d, c
    if u + cost > limit then
      -- Exact wait: oldest entries first, until enough has left the window.
      local need, got, off, w = u + cost - limit, 0, 0, nil
      local from = '(' .. int(now - win)
      while not w do
        local page = redis.call('ZRANGEBYSCORE', key, from, '+inf',
                                'WITHSCORES', 'LIMIT', off, 128)
        if #page == 0 then
          w = 1
        end
        for j = 1, #page, 2 do
          got = got + member_cost(page[j])
          if got >= need then
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
    local start, stop = tonumber(ARGV[a + 4]) * 1000000, tonumber(ARGV[a + 5]) * 1000000
    if now < start or now >= stop then
      return {3, now, 0, i}
    end
    local v = tonumber(redis.call('GET', key)) or 0
    if v + cost > limit and stop - now > worst_wait then
      worst_wait, worst_idx = stop - now, i
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
local rec, reqs, tok, neu = {}, {}, nil, nil
for i = 1, n do
  local a = 6 + (i - 1) * 6
  local cost_s = ARGV[a + 2]
  local key = KEYS[i + 2]
  local ku = ARGV[a + 1]
  local kind, unit = string.sub(ku, 1, 1), string.sub(ku, 2, 2)
  if kind == 'z' then
    log_add(key, now, now_s, tonumber(ARGV[a + 4]), dead[i], cut[i],
            used[i] + tonumber(cost_s), cost_s .. ':' .. token, ARGV[a + 5])
  elseif redis.call('INCRBY', key, cost_s) == tonumber(cost_s) then
    redis.call('EXPIREAT', key, ARGV[a + 6])
  end
  if unit ~= 'r' then
    rec[#rec + 1] = unit .. kind .. key
    if unit == 't' then tok = cost_s else neu = cost_s end
  else
    reqs[#reqs + 1] = unit .. kind .. key
  end
end
if #rec > 0 or ARGV[5] == '1' then
  -- Request entries too: a request that never left is given back in full.
  for j = 1, #reqs do rec[#rec + 1] = reqs[j] end
  redis.call('SET', KEYS[2], (tok or '0') .. '\n' .. (neu or '0') .. '\n' .. table.concat(rec, '\n'),
             'PX', ARGV[6])
end
return {1, now}
