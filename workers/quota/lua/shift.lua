-- A request left later than its reservation: move its charges to when it left.
--
-- The upstream counts a request when it arrives. If the sender stalled between taking
-- quota and writing the request, the log would free that slot too early; moving the
-- entry forward (never back) keeps the log in step with what the upstream saw. A request
-- that left after a calendar boundary is counted by the upstream in the new period: its
-- calendar charges move from the old period's counter to the new one's, and the
-- reservation record follows (so reconcile adjusts the counter that holds the charge).
--
-- ARGV[1] shift (microseconds); ARGV[2] n, the number of sliding logs;
-- KEYS[1..n] the target's sliding logs, ARGV[2 + i] the member of the reservation in
-- KEYS[i] ("<cost>:<token>"); KEYS[n + 1] the reservation record;
-- then per calendar move j: KEYS[n + 2j] old counter, KEYS[n + 2j + 1] new counter,
-- ARGV[2 + n + 2j - 1] cost, ARGV[2 + n + 2j] expire-at (s) of the new counter.
-- Reply: how many entries and counters moved.
local moved = 0
local shift = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
for i = 1, n do
  local score = redis.call('ZSCORE', KEYS[i], ARGV[i + 2])
  if score then
    redis.call('ZADD', KEYS[i], 'XX', tonumber(score) + shift, ARGV[i + 2])
    moved = moved + 1
  end
end
local rec = redis.call('GET', KEYS[n + 1])
local m = (#KEYS - n - 1) / 2
for j = 1, m do
  local old, new = KEYS[n + 2 * j], KEYS[n + 2 * j + 1]
  local cost = tonumber(ARGV[2 + n + 2 * j - 1])
  if cost > 0 and redis.call('EXISTS', old) == 1 then
    if redis.call('DECRBY', old, cost) < 0 then
      redis.call('SET', old, '0', 'KEEPTTL')
    end
    if redis.call('INCRBY', new, cost) == cost then
      redis.call('EXPIREAT', new, ARGV[2 + n + 2 * j])
    end
    moved = moved + 1
  end
  if rec and rec ~= 'done' then
    local lines = {}
    for line in string.gmatch(rec, '[^\n]+') do
      if string.sub(line, 3) == old and string.sub(line, 2, 2) == 'c' then
        line = string.sub(line, 1, 2) .. new
      end
      lines[#lines + 1] = line
    end
    rec = table.concat(lines, '\n')
  end
end
if m > 0 and rec and rec ~= 'done' then
  redis.call('SET', KEYS[n + 1], rec, 'KEEPTTL')
end
return moved
