-- Replace a reservation's estimated tokens/neurons by what the upstream reported.
-- Idempotent: the record becomes "done" (keeping its TTL); a second call changes nothing.
-- Sliding-log entries keep their timestamps; calendar counters are adjusted in place.
-- The keys come from the record; all share its hash tag (slot).
--
-- Requests stay charged unless ARGV[4] is "0" (the request never left: given back whole).
-- KEYS[1] reservation record "<tokens>\n<milli-neurons>\n<unit><kind><key>\n..."
-- ARGV[1] actual tokens, ARGV[2] actual milli-neurons, ARGV[3] reservation token,
-- ARGV[4] actual requests ("1" or "0"; default "1").
-- Reply: 1 applied, 0 unknown or expired, -1 already done.
local rec = redis.call('GET', KEYS[1])
if not rec then
  return 0
end
if rec == 'done' then
  return -1
end
local est_t, est_n, rest = string.match(rec, '^(%d+)\n(%d+)\n?(.*)$')
local est = {t = est_t, n = est_n, r = '1'}
local act = {t = ARGV[1], n = ARGV[2], r = ARGV[4] or '1'}
local token = ARGV[3]
for line in string.gmatch(rest, '[^\n]+') do
  local unit, kind, key = string.sub(line, 1, 1), string.sub(line, 2, 2), string.sub(line, 3)
  local delta = tonumber(act[unit]) - tonumber(est[unit])
  if delta ~= 0 then
    if kind == 'z' then
      local old = est[unit] .. ':' .. token
      local score = redis.call('ZSCORE', key, old)
      if score then
        redis.call('ZREM', key, old)
        if tonumber(act[unit]) > 0 then
          redis.call('ZADD', key, score, act[unit] .. ':' .. token)
        end
        redis.call('ZINCRBY', key, int(-delta), '#')
      end
    elseif redis.call('EXISTS', key) == 1 then
      if redis.call('INCRBY', key, int(delta)) < 0 then
        redis.call('SET', key, '0', 'KEEPTTL')
      end
    end
  end
end
redis.call('SET', KEYS[1], 'done', 'KEEPTTL')
return 1
