-- Shared prelude, prepended to every job store script when it is loaded.

-- The hash of job "<batch>:<index>" in namespace ns (JobStore.job_key).
local function job_key(ns, jid)
  local batch, index = string.match(jid, '^(.*):(%d+)$')
  return ns .. ':j:{' .. batch .. '}:' .. index
end

-- Job jid (hash jkey) starts on target: in its calling set from now, state "running".
local function claim(jkey, calling_key, jid, target)
  local now = redis.call('TIME')
  redis.call('ZADD', calling_key, tonumber(now[1]) + tonumber(now[2]) / 1e6, jid)
  redis.call('HSET', jkey, 'state', 'running', 'target', target)
  redis.call('HINCRBY', jkey, 'tries', 1)
end
