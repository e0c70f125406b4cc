-- Put back the jobs of target T whose holder is gone (the routers' sweep; see
-- workers/liveness.py). Atomic per target: a job is claimed, swept or finished, never two.
-- KEYS[1] queued:T, KEYS[2] calling:T, KEYS[3] wake list
-- ARGV[1] namespace, ARGV[2] grace: seconds a handed-out job may wait for its call task
-- after its pumping process is gone, ARGV[3] hand-out timeout: seconds after which an
-- unstarted hand-out is presumed lost whoever holds it, ARGV[4] max crashes,
-- ARGV[5] retention seconds, ARGV[6] stale seconds for a job naming no holder,
-- ARGV[7] margin: a job claimed this long before its live holder's last renewal must be
-- listed in that lease (the process lists a job right after claiming it)
-- Returns {handed-out jobs put back, running jobs put back, jobs ended as poison}.
local ns = ARGV[1]
local now = now_s()
local function alive(holder)
  return holder and redis.call('EXISTS', ns .. ':lease:' .. holder) == 1
end
-- Whether a live holder may still run jid, claimed at claimed_at: its lease lists the jobs
-- it ran at its last renewal, whose moment the key's remaining time tells (Redis' clock).
local listed = {}
local function runs(holder, jid, claimed_at)
  if listed[holder] == nil then
    listed[holder] = false  -- a lease that lists nothing (older workers): it runs them all
    local key = ns .. ':lease:' .. holder
    local ok, info = pcall(cjson.decode, redis.call('GET', key) or '')
    if ok and type(info) == 'table' and type(info.jobs) == 'table'
       and tonumber(info.lease_ms) then
      local set = {}
      for _, j in ipairs(info.jobs) do set[j] = true end
      local renewed = now - (tonumber(info.lease_ms) - redis.call('PTTL', key)) / 1000
      listed[holder] = {jobs = set, renewed = renewed}
    end
  end
  local l = listed[holder]
  return l == false or l.jobs[jid] == true or claimed_at > l.renewed - tonumber(ARGV[7])
end
local handed, running, poisoned = 0, 0, 0
for _, e in ipairs({{KEYS[1], 'dispatched'}, {KEYS[2], 'running'}}) do
  local set, held_state = e[1], e[2]
  local members = redis.call('ZRANGE', set, 0, -1, 'WITHSCORES')
  for i = 1, #members, 2 do
    local jid, age = members[i], now - tonumber(members[i + 1])
    local jkey = job_key(ns, jid)
    local f = redis.call('HMGET', jkey, 'state', 'holder', 'sig', 'score')
    local state, holder = f[1], f[2]
    if state == false or TERMINAL[state] then
      -- a leftover of a task that died between its finish and its release
      if age > tonumber(ARGV[2]) then redis.call('ZREM', set, jid) end
    elseif state ~= held_state then
      -- dispatched in calling / running in queued / waiting: another set or its own
      -- task's release accounts for it; only a dead holder's entry is cleared
      if not alive(holder) and age > tonumber(ARGV[2]) then redis.call('ZREM', set, jid) end
    else
      local gone
      if holder then gone = not alive(holder) else gone = age > tonumber(ARGV[6]) end
      if held_state == 'dispatched' then
        if (gone and age > tonumber(ARGV[2])) or age > tonumber(ARGV[3]) then
          redis.call('ZREM', set, jid)
          park_job(ns, jkey, jid, f[3], tonumber(f[4]) or 0, KEYS[3])
          handed = handed + 1
        end
      elseif gone then
        redis.call('ZREM', KEYS[1], jid)  -- a handed-out job stays queued while it runs
        redis.call('ZREM', set, jid)
        local r = crashed(ns, jkey, jid, 'the worker serving it stopped (its lease lapsed)',
                          ARGV[4], ARGV[5], KEYS[3], '')
        if r == 2 then poisoned = poisoned + 1 else running = running + 1 end
      elseif holder and not runs(holder, jid, now - age) then
        -- its live holder forgot it (a Redis crash lost its finish or release)
        redis.call('ZREM', KEYS[1], jid)
        redis.call('ZREM', set, jid)
        park_job(ns, jkey, jid, f[3], tonumber(f[4]) or 0, KEYS[3])
        running = running + 1
      end
    end
  end
end
return {handed, running, poisoned}
