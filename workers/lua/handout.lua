-- The pump hands one waiting job to a target's provider queue, unless another taker (a
-- call task going on with its target's backlog) took it first, or the target reached its
-- concurrency since the pump counted (a gateway call or another waiting set's pump took
-- the last slot meanwhile).
-- KEYS[1] waiting zset, KEYS[2] queued:T, KEYS[3] job hash, KEYS[4] calling:T,
-- KEYS[5] gwcalling:T
-- ARGV[1] job id, ARGV[2] T, ARGV[3] holder (the pumping process's lease id),
-- ARGV[4] T's concurrency ("0": not checked)
-- Returns the hand-out's ticket (> 0: publish its call task with it), 0 when the job was
-- no longer waiting, -1 when T is at its concurrency (the job keeps waiting). Only a
-- message carrying the job's latest ticket may start it.
if redis.call('ZSCORE', KEYS[1], ARGV[1]) == false then return 0 end
local now, cap = now_s(), tonumber(ARGV[4]) or 0
if cap > 0 and occupancy(KEYS[2], KEYS[4], KEYS[5], now) >= cap then return -1 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], now, ARGV[1])
redis.call('HSET', KEYS[3], 'state', 'dispatched', 'target', ARGV[2], 'holder', ARGV[3])
return redis.call('HINCRBY', KEYS[3], 'ticket', 1)
