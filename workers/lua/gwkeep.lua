-- A gateway call still in progress (a long stream) extends its slot's lease; a slot that
-- was already released or purged is not brought back.
-- KEYS[1] gwcalling:T
-- ARGV[1] member, ARGV[2] lease in milliseconds
-- Returns 1 when extended, 0 when the slot is gone.
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
local lease_ms = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now_s() + lease_ms / 1000, ARGV[1])
if redis.call('PTTL', KEYS[1]) < lease_ms + 1000 then
  redis.call('PEXPIRE', KEYS[1], lease_ms + 1000)
end
return 1
