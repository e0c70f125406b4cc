-- A call task is over: its slot on target T is free, unless someone else holds the job
-- now (this task's worker was presumed dead and the job was swept and claimed again).
-- KEYS[1] queued:T, KEYS[2] calling:T, KEYS[3] wake list, KEYS[4] job hash
-- ARGV[1] job id, ARGV[2] holder, ARGV[3..] signatures to wake
local holder = redis.call('HGET', KEYS[4], 'holder')
if holder == false or holder == ARGV[2] then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
end
if #ARGV >= 3 then
  for i = 3, #ARGV do redis.call('RPUSH', KEYS[3], ARGV[i]) end
  redis.call('LTRIM', KEYS[3], -1000, -1)
end
return 1
