-- The first jobs of a waiting set with their fields, in one round trip (the pump reads
-- them to route them).
-- KEYS[1] waiting zset. ARGV[1] how many, ARGV[2] namespace
-- Returns {job id, field count, field, value, ..., job id, 0, ...} (0: the job is gone).
local out = {}
for _, jid in ipairs(redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)) do
  local fields = redis.call('HGETALL', job_key(ARGV[2], jid))
  out[#out + 1] = jid
  out[#out + 1] = #fields
  for j = 1, #fields do out[#out + 1] = fields[j] end
end
return out
