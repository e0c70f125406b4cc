-- End a job exactly once: only a job that is not yet terminal takes the result.
-- KEYS[1] job hash, KEYS[2] batch hash
-- ARGV[1] state ("completed" | "failed" | "cancelled" | "expired"), ARGV[2] result JSON,
-- ARGV[3] provider (or ""), ARGV[4] retention seconds, ARGV[5] batch-done list key,
-- ARGV[6] attempts
local state = redis.call('HGET', KEYS[1], 'state')
if state == false then return -1 end
if state == 'completed' or state == 'failed' or state == 'cancelled' or state == 'expired' then
  return 0
end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'result', ARGV[2], 'attempts', ARGV[6],
           'ended', redis.call('TIME')[1])
local field = 'completed'
if ARGV[1] ~= 'completed' then field = 'failed' end
redis.call('HINCRBY', KEYS[2], field, 1)
if ARGV[3] ~= '' then redis.call('HINCRBY', KEYS[2], 'p:' .. ARGV[3], 1) end
local b = redis.call('HMGET', KEYS[2], 'total', 'completed', 'failed')
if tonumber(b[1]) and (tonumber(b[2] or 0) + tonumber(b[3] or 0)) >= tonumber(b[1]) then
  local status = redis.call('HGET', KEYS[2], 'status')
  if status ~= 'cancelled' then redis.call('HSET', KEYS[2], 'status', 'completed') end
  redis.call('HSET', KEYS[2], 'ended', redis.call('TIME')[1])
  redis.call('RPUSH', ARGV[5], '1')
  redis.call('EXPIRE', ARGV[5], tonumber(ARGV[4]))
end
return 1
