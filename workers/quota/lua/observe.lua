-- Lower our view of a limit to what the upstream says remains (someone else uses the key).
-- KEYS[1] the limit's key. ARGV[1] kind "z" | "c", ARGV[2] limit, ARGV[3] remaining,
-- z: ARGV[4] window_us, ARGV[5] reset_us (when the upstream's window frees), ARGV[6] TTL ms
--    (> 2 windows),
--    ARGV[7] token of the synthetic entry
-- c: ARGV[4] period start s, ARGV[5] period end s, ARGV[6] expire-at s
-- Reply: {units added, now}; {-1, now} for a stale calendar period.
local now = now_us()
local limit, remaining = tonumber(ARGV[2]), tonumber(ARGV[3])
local key = KEYS[1]
if ARGV[1] == 'z' then
  local win = tonumber(ARGV[4])
  local used, deadline, cut = log_used(key, now, win)
  local add = (limit - remaining) - used
  if add <= 0 then
    return {0, now}
  end
  -- Stamped so that it leaves the window when the upstream says its window resets.
  local score = now + tonumber(ARGV[5]) - win
  if score > now then score = now end
  if score <= now - win then score = now - win + 1 end
  log_add(key, now, int(score), win, deadline, cut, used + add, int(add) .. ':' .. ARGV[7],
          ARGV[6])
  return {add, now}
end
local start, stop = tonumber(ARGV[4]), tonumber(ARGV[5])
if now < start * 1000000 or now >= stop * 1000000 then
  return {-1, now}
end
local v = tonumber(redis.call('GET', key)) or 0
local add = (limit - remaining) - v
if add <= 0 then
  return {0, now}
end
redis.call('INCRBY', key, int(add))
redis.call('EXPIREAT', key, ARGV[6])
return {add, now}
