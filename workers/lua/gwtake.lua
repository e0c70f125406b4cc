-- A gateway (interactive) call takes a concurrency slot on target T for its duration,
-- only if T has one free: jobs handed out or calling + live gateway slots < concurrency.
-- The slot is leased: scored by its expiry, refreshed while the call lasts (gwkeep.lua),
-- removed when it ends; a gateway process that dies leaves it to expire.
-- KEYS[1] gwcalling:T, KEYS[2] queued:T, KEYS[3] calling:T
-- ARGV[1] member (the call's id), ARGV[2] concurrency, ARGV[3] lease in milliseconds
-- Returns 1 when taken, 0 when T is at its concurrency.
local now = now_s()
if occupancy(KEYS[2], KEYS[3], KEYS[1], now) >= tonumber(ARGV[2]) then return 0 end
local lease_ms = tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], now + lease_ms / 1000, ARGV[1])
if redis.call('PTTL', KEYS[1]) < lease_ms + 1000 then  -- every member expires before the key
  redis.call('PEXPIRE', KEYS[1], lease_ms + 1000)
end
return 1
