-- Add prompt-size samples to a model's estimator state, keeping the newest per kind.
--
-- KEYS[1] estimator hash of one model: field <kind> = "s1,s2,..." (newest first)
-- ARGV[1] samples kept per kind, ARGV[2] TTL (s), then pairs: kind, sample (decimal text).
-- Reply: the whole hash after the update, as a flat list {field, value, ...}.
local keep = tonumber(ARGV[1])
for i = 3, #ARGV, 2 do
  local kind, sample = ARGV[i], ARGV[i + 1]
  local cur = redis.call('HGET', KEYS[1], kind)
  local out, n = {sample}, 1
  if cur then
    for s in string.gmatch(cur, '[^,]+') do
      if n >= keep then break end
      n = n + 1
      out[n] = s
    end
  end
  redis.call('HSET', KEYS[1], kind, table.concat(out, ','))
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return redis.call('HGETALL', KEYS[1])
