-- A call task starts: read the job and its batch's status and, unless the job already
-- ended, claim it for target T (it leaves any waiting set it was put back in meanwhile).
-- KEYS[1] job hash, KEYS[2] batch hash, KEYS[3] calling:T
-- ARGV[1] job id, ARGV[2] T, ARGV[3] namespace
-- Returns {batch status, simulated, deadline, field, value, ...} (no fields: unknown job).
local batch = redis.call('HMGET', KEYS[2], 'status', 'simulated', 'deadline')
local state = redis.call('HGET', KEYS[1], 'state')
if state and state ~= 'completed' and state ~= 'failed' and state ~= 'cancelled'
   and state ~= 'expired' then
  local sig = redis.call('HGET', KEYS[1], 'sig')
  if sig then redis.call('ZREM', ARGV[3] .. ':w:' .. sig, ARGV[1]) end
  claim(KEYS[1], KEYS[3], ARGV[1], ARGV[2])
end
local out = {batch[1] or '', batch[2] or '', batch[3] or ''}
local fields = redis.call('HGETALL', KEYS[1])
for j = 1, #fields do out[#out + 1] = fields[j] end
return out
