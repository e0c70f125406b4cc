-- A call task starts: read the job and its batch's status and claim the job for target T,
-- but only when its message is the job's latest hand-out: the job is "dispatched" and the
-- ticket matches. A message redelivered for a job that was put back, re-claimed by a live
-- worker, or already served claims nothing (the call task then does nothing).
-- KEYS[1] job hash, KEYS[2] batch hash, KEYS[3] calling:T
-- ARGV[1] job id, ARGV[2] T, ARGV[3] holder, ARGV[4] ticket ("": a message without one)
-- Returns {batch status, simulated, deadline, claimed "1"/"0", field, value, ...}
-- (no fields: unknown job).
local batch = redis.call('HMGET', KEYS[2], 'status', 'simulated', 'deadline')
local job = redis.call('HMGET', KEYS[1], 'state', 'ticket')
local claimed = '0'
if job[1] == 'dispatched' and (ARGV[4] == '' or ARGV[4] == (job[2] or '')) then
  claim(KEYS[1], KEYS[3], ARGV[1], ARGV[2], ARGV[3])
  claimed = '1'
end
local out = {batch[1] or '', batch[2] or '', batch[3] or '', claimed}
local fields = redis.call('HGETALL', KEYS[1])
for j = 1, #fields do out[#out + 1] = fields[j] end
return out
