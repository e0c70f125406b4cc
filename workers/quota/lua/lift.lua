-- Lift a cooldown before its end, only when it was set for the given reason (a model closed
-- as "not listed upstream" reopens once listed again; a 429's pause is never lifted by it).
-- KEYS[1] cooldown hash; ARGV[1] field ("p" or "m:<model>"), ARGV[2] reason. Reply: 1 or 0.
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then
  return 0
end
local reason = string.match(cur, '^%d+|(.*)$')
if reason ~= ARGV[2] then
  return 0
end
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
