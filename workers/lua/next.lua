-- A call task ended a job on target T and, if allowed, goes on with T's backlog: it takes
-- the fairest head of the waiting sets where T is the first choice, in the same slot.
-- Atomic, so the pump and other call tasks never get the same job. When nothing is taken,
-- the slot is given back and the waiting sets T may serve are woken (as a release does).
-- KEYS[1] calling:T, KEYS[2] queued:T, KEYS[3] wake list, KEYS[4..] waiting zsets
-- ARGV[1] the ended job's id, ARGV[2] T, ARGV[3] namespace, ARGV[4] "1" to take a job,
-- ARGV[5] holder (this worker's lease id), ARGV[6..] the signatures to wake when nothing
-- is taken
-- Returns {job id, batch status, field, value, ...} of the taken job, or {} when none.
local prev_holder = redis.call('HGET', job_key(ARGV[3], ARGV[1]), 'holder')
if prev_holder == false or prev_holder == ARGV[5] then  -- else: swept and claimed again
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
end
if ARGV[4] == '1' then
  local best, best_key, best_score = nil, nil, nil
  for i = 4, #KEYS do
    local head = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
    if head[1] and (best_score == nil or tonumber(head[2]) < best_score) then
      best, best_key, best_score = head[1], KEYS[i], tonumber(head[2])
    end
  end
  if best then
    redis.call('ZREM', best_key, best)
    local jkey = job_key(ARGV[3], best)
    claim(jkey, KEYS[1], best, ARGV[2], ARGV[5])
    local out = {best, redis.call('HGET', ARGV[3] .. ':b:{' .. batch_of(best) .. '}', 'status')
                       or ''}
    local fields = redis.call('HGETALL', jkey)
    for j = 1, #fields do out[#out + 1] = fields[j] end
    return out
  end
end
if #ARGV >= 6 then
  for i = 6, #ARGV do redis.call('RPUSH', KEYS[3], ARGV[i]) end
  redis.call('LTRIM', KEYS[3], -1000, -1)
end
return {}
