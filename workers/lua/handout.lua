-- The pump hands one waiting job to a target's provider queue, unless another taker (a
-- call task going on with its target's backlog) took it first.
-- KEYS[1] waiting zset, KEYS[2] queued:T, KEYS[3] job hash
-- ARGV[1] job id, ARGV[2] T
-- Returns 1 when handed out (publish its call task), 0 when it was no longer waiting.
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
local now = redis.call('TIME')
redis.call('ZADD', KEYS[2], tonumber(now[1]) + tonumber(now[2]) / 1e6, ARGV[1])
redis.call('HSET', KEYS[3], 'state', 'dispatched', 'target', ARGV[2])
return 1
