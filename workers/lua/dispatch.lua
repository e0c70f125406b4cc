-- Hand a waiting job to a target: only the pumper that takes it out of the waiting set
-- marks it (several routers may pump the same set at once; none takes a lock).
-- KEYS[1] waiting zset, KEYS[2] the target's queued zset, KEYS[3] job hash
-- ARGV[1] job id, ARGV[2] target, ARGV[3] now (seconds)
-- Reply: 1 taken (publish its call task), 0 someone else took it.
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then
  return 0
end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('HSET', KEYS[3], 'state', 'dispatched', 'target', ARGV[2])
return 1
