-- The pump hands one waiting job to a target's provider queue, unless another taker (a
-- call task going on with its target's backlog) took it first.
-- KEYS[1] waiting zset, KEYS[2] queued:T, KEYS[3] job hash
-- ARGV[1] job id, ARGV[2] T, ARGV[3] holder (the pumping process's lease id)
-- Returns the hand-out's ticket (> 0: publish its call task with it), 0 when the job was
-- no longer waiting. Only a message carrying the job's latest ticket may start it.
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('ZADD', KEYS[2], now_s(), ARGV[1])
redis.call('HSET', KEYS[3], 'state', 'dispatched', 'target', ARGV[2], 'holder', ARGV[3])
return redis.call('HINCRBY', KEYS[3], 'ticket', 1)
