-- A request left later than its reservation: move its sliding-log entries to when it left.
--
-- The upstream counts a request when it arrives. If the sender stalled between taking
-- quota and writing the request, the log would free that slot too early; moving the
-- entry forward (never back) keeps the log in step with what the upstream saw.
--
-- KEYS[1..n] the target's sliding logs; ARGV[1] shift (microseconds);
-- ARGV[1 + i] the member of the reservation in KEYS[i] ("<cost>:<token>").
-- Reply: how many entries moved.
local moved = 0
local shift = tonumber(ARGV[1])
for i = 1, #KEYS do
  local score = redis.call('ZSCORE', KEYS[i], ARGV[i + 1])
  if score then
    redis.call('ZADD', KEYS[i], 'XX', tonumber(score) + shift, ARGV[i + 1])
    moved = moved + 1
  end
end
return moved
