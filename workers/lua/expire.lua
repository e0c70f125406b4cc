-- A batch's deadline passed: jobs N..M-1 that still wait (or were handed out and not yet
-- started) end "expired" wherever they wait. Running jobs finish their call.
-- KEYS[1] batch hash. ARGV[1] namespace, ARGV[2] batch id, ARGV[3] first index,
-- ARGV[4] index after the last, ARGV[5] result JSON, ARGV[6] retention seconds
-- Returns how many jobs ended.
local ns, batch = ARGV[1], ARGV[2]
local n = 0
for i = tonumber(ARGV[3]), tonumber(ARGV[4]) - 1 do
  local jid = batch .. ':' .. i
  local jkey = ns .. ':j:{' .. batch .. '}:' .. i
  local f = redis.call('HMGET', jkey, 'state', 'sig', 'target')
  if f[1] == 'waiting' or f[1] == 'dispatched' then
    if f[2] then redis.call('ZREM', ns .. ':w:' .. f[2], jid) end
    if f[3] then redis.call('ZREM', ns .. ':queued:' .. f[3], jid) end
    n = n + end_job(ns, jkey, jid, 'expired', ARGV[5], '', ARGV[6], false)
  end
end
return n
