-- Pause a model or a whole provider: a field "<until_us>|<reason>" in the provider's
-- cooldown hash. A shorter cooldown never shortens a longer one already in force.
-- KEYS[1] cooldown hash; ARGV[1] field ("p" or "m:<model>"), ARGV[2] duration_us,
-- ARGV[3] reason. Reply: {until_us, now}.
local now = now_us()
local untl = now + tonumber(ARGV[2])
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  local c = tonumber(string.match(cur, '^(%d+)'))
  if c >= untl then
    return {c, now}
  end
end
redis.call('HSET', KEYS[1], ARGV[1], int(untl) .. '|' .. ARGV[3])
local ms = math.ceil(tonumber(ARGV[2]) / 1000) + 1000
if redis.call('PTTL', KEYS[1]) < ms then
  redis.call('PEXPIRE', KEYS[1], ms)
end
return {untl, now}
