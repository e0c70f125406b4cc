-- Shared prelude, prepended to every job store script when it is loaded.

local TERMINAL = {completed = true, failed = true, cancelled = true, expired = true}

-- The hash of job "<batch>:<index>" in namespace ns (JobStore.job_key).
local function job_key(ns, jid)
  local batch, index = string.match(jid, '^(.*):(%d+)$')
  return ns .. ':j:{' .. batch .. '}:' .. index
end

-- The batch id of job "<batch>:<index>".
local function batch_of(jid)
  return string.match(jid, '^(.*):%d+$')
end

local function now_s()
  local now = redis.call('TIME')
  return tonumber(now[1]) + tonumber(now[2]) / 1e6
end

-- Job jid (hash jkey) starts on target for holder (a worker's lease id): in its calling
-- set from now, state "running" (a handed-out job stays in queued:T until its release).
local function claim(jkey, calling_key, jid, target, holder)
  redis.call('ZADD', calling_key, now_s(), jid)
  redis.call('HSET', jkey, 'state', 'running', 'target', target, 'holder', holder)
  redis.call('HINCRBY', jkey, 'tries', 1)
end

-- Put a job back in the waiting set of its signature at its score (keeps its place) and
-- wake the routers for that set; nobody holds it any more.
local function park_job(ns, jkey, jid, sig, score, wake_key)
  redis.call('HSET', jkey, 'state', 'waiting', 'sig', sig)
  redis.call('HDEL', jkey, 'holder')
  redis.call('ZADD', ns .. ':w:' .. sig, score, jid)
  redis.call('RPUSH', wake_key, sig)
  redis.call('LTRIM', wake_key, -1000, -1)
end

-- End a job exactly once; returns 1, or 0 when it had already ended (-1: unknown job).
-- attempts may be false (kept as stored).
local function end_job(ns, jkey, jid, state, result, provider, retention, attempts)
  local current = redis.call('HGET', jkey, 'state')
  if current == false then return -1 end
  if TERMINAL[current] then return 0 end
  local batch = batch_of(jid)
  local bkey = ns .. ':b:{' .. batch .. '}'
  local ended = redis.call('TIME')[1]
  redis.call('HSET', jkey, 'state', state, 'result', result, 'ended', ended)
  if attempts then redis.call('HSET', jkey, 'attempts', attempts) end
  local field = 'completed'
  if state ~= 'completed' then field = 'failed' end
  redis.call('HINCRBY', bkey, field, 1)
  if provider ~= '' then redis.call('HINCRBY', bkey, 'p:' .. provider, 1) end
  local b = redis.call('HMGET', bkey, 'total', 'completed', 'failed')
  if tonumber(b[1]) and (tonumber(b[2] or 0) + tonumber(b[3] or 0)) >= tonumber(b[1]) then
    local status = redis.call('HGET', bkey, 'status')
    if status ~= 'cancelled' then redis.call('HSET', bkey, 'status', 'completed') end
    redis.call('HSET', bkey, 'ended', ended)
    local done = ns .. ':done:{' .. batch .. '}'
    redis.call('RPUSH', done, '1')
    redis.call('EXPIRE', done, tonumber(retention))
  end
  return 1
end

-- A job's call crashed (reason): it waits again, or, the max_crashes-th time, ends
-- "failed" with internal_error. holder: only while that process holds it ("": whoever).
-- Returns 1 when put back, 2 when ended, 0 when it had ended or is held by another.
local function crashed(ns, jkey, jid, reason, max_crashes, retention, wake_key, holder)
  local state = redis.call('HGET', jkey, 'state')
  if state == false or TERMINAL[state] then return 0 end
  if holder ~= '' and redis.call('HGET', jkey, 'holder') ~= holder then return 0 end
  local n = redis.call('HINCRBY', jkey, 'crashes', 1)
  if n >= tonumber(max_crashes) then
    local target = redis.call('HGET', jkey, 'target') or ''
    local provider, model = string.match(target, '^([^/]*)/(.*)$')
    local result = cjson.encode({
      error = {code = 'internal_error',
               message = 'the job crashed its call ' .. n .. ' times; last: ' .. reason},
      dispatch = {provider = provider or cjson.null, model = model or cjson.null,
                  attempts = tonumber(redis.call('HGET', jkey, 'attempts') or '0') or 0,
                  crashes = n}})
    end_job(ns, jkey, jid, 'failed', result, '', retention, false)
    return 2
  end
  local f = redis.call('HMGET', jkey, 'sig', 'score')
  park_job(ns, jkey, jid, f[1], tonumber(f[2]) or 0, wake_key)
  return 1
end

-- How many of target T's concurrency slots are taken now: the jobs handed to it or in a
-- call (a handed-out job that started is in both sets: counted once) and the live slots
-- of gateway calls (gw: a zset of members scored by lease expiry; expired ones are
-- removed here, so a gateway process that died holds nothing past its leases).
local function occupancy(queued_key, calling_key, gw_key, now)
  redis.call('ZREMRANGEBYSCORE', gw_key, '-inf', now)
  local queued, calling = redis.call('ZCARD', queued_key), redis.call('ZCARD', calling_key)
  local both = 0
  if queued > 0 and calling > 0 then
    both = redis.call('ZINTERCARD', 2, queued_key, calling_key)
  end
  return queued + calling - both + redis.call('ZCARD', gw_key)
end
