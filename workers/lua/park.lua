-- Put a job (back) in the waiting set of its remaining targets, unless it already ended.
-- KEYS[1] job hash, KEYS[2] waiting zset, KEYS[3] wake list
-- ARGV[1] job id, ARGV[2] waitset signature, ARGV[3] excluded JSON, ARGV[4] score
local state = redis.call('HGET', KEYS[1], 'state')
if state == false or state == 'completed' or state == 'failed'
   or state == 'cancelled' or state == 'expired' then
  return 0
end
redis.call('HSET', KEYS[1], 'state', 'waiting', 'sig', ARGV[2], 'excluded', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
redis.call('RPUSH', KEYS[3], ARGV[2])
redis.call('LTRIM', KEYS[3], -1000, -1)
return 1
