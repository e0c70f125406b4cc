-- Read-only view of a cooldown hash: {now, until_p, reason_p, until_m, reason_m}.
-- KEYS[1] cooldown hash; ARGV[1] model field.
local now = now_us()
local v = redis.call('HMGET', KEYS[1], 'p', ARGV[1])
local out = {now}
for i = 1, 2 do
  if v[i] then
    local untl, reason = string.match(v[i], '^(%d+)|(.*)$')
    out[#out + 1] = tonumber(untl)
    out[#out + 1] = reason
  else
    out[#out + 1] = 0
    out[#out + 1] = ''
  end
end
return out
